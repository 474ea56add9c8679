"""Print what the demo's events did to Nautobot: the VLANs and the change log entries streamsync wrote."""

from streamsync.cli.nautobot_setup import setup

setup()

from nautobot.extras.models import ObjectChange  # noqa: E402
from nautobot.ipam.models import VLAN  # noqa: E402

print("\nVLANs in Nautobot:")
print(f"  {'VID':>4}  {'NAME':<8} {'STATUS':<9} DESCRIPTION")
for vlan in VLAN.objects.filter(vlan_group__isnull=True).select_related("status").order_by("vid"):
    print(f"  {vlan.vid:>4}  {vlan.name:<8} {vlan.status.name:<9} {vlan.description}")

print("\nChange log (user streamsync):")
for change in ObjectChange.objects.filter(user_name="streamsync").order_by("time"):
    print(f"  {change.time:%H:%M:%S}  {change.action:<7} {change.changed_object_type.model} {change.object_repr}")
