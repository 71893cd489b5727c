"""What a watch attached, on disk: written before each attachment is made, so that
`pktfate cleanup` can find and remove what a killed run left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import PktfateError
from ..host.netlink import interface_of, pyroute2
from .hooks import (
    TC_EGRESS_PARENT,
    TC_FILTER_PREFIX,
    TC_INGRESS_PARENT,
    delete_filter,
    our_filters,
    tc_remove,
    xdp_detach,
)

STATE_DIR = Path("/run/pktfate")


def _state_path(pid: int) -> Path:
    return STATE_DIR / f"watch-{pid}.json"


class StateFile:
    """What this run attached, written before each attachment is made."""

    def __init__(self, netns: int):
        self.path = _state_path(os.getpid())
        self.record: dict = {"pid": os.getpid(), "netns": netns, "xdp": [], "tc": []}

    def add(self, kind: str, entry: dict) -> None:
        self.record[kind].append(entry)
        self._write()

    def drop(self, kind: str, entry: dict) -> None:
        if entry in self.record[kind]:
            self.record[kind].remove(entry)
            self._write()

    def _write(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_states() -> list[dict]:
    """State files of runs that ended without removing what they attached."""
    found = []
    for path in sorted(STATE_DIR.glob("watch-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(record.get("pid", 0)):
            record["_path"] = str(path)
            found.append(record)
    return found


def _netns_paths() -> list[tuple[str, str | None]]:
    """(label, netns argument for IPRoute) for this namespace and every named one."""
    found: list[tuple[str, str | None]] = [("this namespace", None)]
    run_netns = Path("/run/netns")
    if run_netns.is_dir():
        found += [(f"netns {p.name}", p.name) for p in sorted(run_netns.iterdir())]
    return found


def _netns_inode_of(netns: str | None) -> int:
    path = "/proc/self/ns/net" if netns is None else f"/run/netns/{netns}"
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def cleanup(all_named_netns: bool = True) -> list[str]:
    """Remove what killed runs left attached. Returns one line per removal."""
    if os.geteuid() != 0:
        raise PktfateError("pktfate cleanup needs root: run it with sudo")
    done: list[str] = []
    states = leftover_states()
    places = _netns_paths() if all_named_netns else _netns_paths()[:1]
    for label, netns in places:
        inode = _netns_inode_of(netns)
        mine = [s for s in states if s.get("netns") == inode]
        try:
            ipr = pyroute2().IPRoute(netns=netns) if netns else pyroute2().IPRoute()
        except Exception:
            continue
        with ipr:
            done += _cleanup_in(ipr, label, mine)
    for record in states:
        Path(record["_path"]).unlink(missing_ok=True)
    return done


def _cleanup_in(ipr, label: str, states: list[dict]) -> list[str]:
    done = []
    for record in states:
        for entry in record.get("xdp", []):
            links = ipr.get_links(entry["index"]) if _link_exists(ipr, entry["index"]) else []
            if links and interface_of(links[0]).xdp_prog_id == entry.get("prog_id"):
                xdp_detach(ipr, entry["index"], entry["mode"])
                done.append(f"{label}: removed XDP program from {entry['name']}")
    # tc filters carry pktfate's name: find them whether or not a state file says so.
    for link in ipr.get_links():
        iface = interface_of(link)
        for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
            for flt in our_filters(ipr, iface.index, parent):
                owner = flt.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME")
                if _filter_owner_alive(owner):
                    continue
                delete_filter(ipr, iface.index, parent, flt)
                done.append(f"{label}: removed tc filter {owner} from {iface.name}")
    for record in states:
        for entry in record.get("tc", []):
            if entry.get("created_clsact") and _link_exists(ipr, entry["index"]):
                tc_remove(ipr, dict(entry, filters=[]))
    return done


def _link_exists(ipr, index: int) -> bool:
    try:
        return bool(ipr.get_links(index))
    except Exception:
        return False


def _filter_owner_alive(name: str) -> bool:
    try:
        pid = int(name[len(TC_FILTER_PREFIX):].split("-")[0])
    except ValueError:
        return False
    return pid != os.getpid() and pid_alive(pid)


