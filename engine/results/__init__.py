"""Request and result models shared by the TUI, the batch commands and the Python API, one module
per area: ``base`` (``Frozen``, ``SCHEMA_VERSION``, the lens spec), ``analyze``, ``generate``,
``verify``, ``tracking``, ``tuned_lens``, ``layers``, ``directions``, ``probe``, ``neurons``,
``diff``, ``compare``, ``patch``, ``ablation``, ``steering``, ``attribution``, ``circuit``, ``hooks``.

Import a model from its module (``from engine.results.analyze import AnalysisResult``); this
package re-exports nothing. None of these modules imports MLX.
"""
