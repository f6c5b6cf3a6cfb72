"""lazarus: the Textual app and the headless batch commands."""
