"""streamsync in Nautobot's navigation menu (Apps)."""

from nautobot.apps.ui import NavigationIconChoices, NavigationWeightChoices, NavMenuGroup, NavMenuItem, NavMenuTab

from streamsync.views import PERMISSION

menu_items = (
    NavMenuTab(
        name="Apps",
        icon=NavigationIconChoices.APPS,
        weight=NavigationWeightChoices.APPS,
        groups=(
            NavMenuGroup(
                name="streamsync",
                weight=450,
                items=(NavMenuItem(link="plugins:streamsync:health", name="Sync health", permissions=[PERMISSION]),),
            ),
        ),
    ),
)
