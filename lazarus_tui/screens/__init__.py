"""The workbench's screens, in one list: (key, mode name, title, screen class).

To add a screen, write ``screens/<name>.py`` with a ``WorkbenchScreen`` subclass and add
a row here: the app makes it a mode, binds its key and lists it in the command palette.
"""

from __future__ import annotations

from typing import NamedTuple

from textual.screen import Screen


class ScreenEntry(NamedTuple):
    key: str
    name: str
    title: str
    screen: type[Screen]


def screen_entries() -> list[ScreenEntry]:
    from lazarus_tui.screens.ablation import AblationScreen
    from lazarus_tui.screens.attribution import AttributionScreen
    from lazarus_tui.screens.circuit import CircuitScreen
    from lazarus_tui.screens.lens import LensScreen
    from lazarus_tui.screens.steering import SteeringScreen
    from lazarus_tui.screens.tracking import TrackingScreen
    from lazarus_tui.screens.workbench import AnalysisWorkbenchScreen

    return [
        ScreenEntry("1", "lens", "Logit lens", LensScreen),
        ScreenEntry("2", "tracking", "Token tracking", TrackingScreen),
        ScreenEntry("3", "ablation", "Ablation", AblationScreen),
        ScreenEntry("4", "steering", "Steering", SteeringScreen),
        ScreenEntry("5", "workbench", "Workbench", AnalysisWorkbenchScreen),
        ScreenEntry("6", "circuit", "Circuit", CircuitScreen),
        ScreenEntry("7", "attribution", "Attribution", AttributionScreen),
    ]
