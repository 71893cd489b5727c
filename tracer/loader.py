"""The only module that talks to bcc and pyroute2: compile the BPF programs,
attach them, stream their events, and remove exactly what was attached.

Attachments that outlive the process (XDP programs and tc filters stay on their
interfaces after a SIGKILL) are written to a state file before they are made,
so that `pktfate cleanup` can find and remove them later.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .config import WatchConfig, render_source
from .decode import HOOKS, STAT_AGG_FULL, STAT_LOST, STAT_SAMPLED, STAT_SLOTS, RawAggKey, RawEvent
from .errors import PktfateError
from .kernel import KernelInfo

STATE_DIR = Path("/run/pktfate")
TC_INGRESS_PARENT = 0xFFFFFFF2
TC_EGRESS_PARENT = 0xFFFFFFF3
TC_FILTER_PREFIX = "pktfate-"
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0  # never replace another tool's program
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
_ARPHRD_ETHER = 1
_ARPHRD_LOOPBACK = 772
_IFF_UP = 0x1


def _pyroute2():
    try:
        import pyroute2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise PktfateError("pyroute2 is not installed: run 'sudo make setup'") from exc
    return pyroute2


def _bcc():
    try:
        import bcc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise PktfateError(
            "bcc is not importable: install python3-bpfcc and use a virtualenv made "
            "with --system-site-packages ('sudo make setup' does both)"
        ) from exc
    return bcc


@dataclass
class Interface:
    index: int
    name: str
    up: bool
    ethernet: bool  # has an Ethernet header the XDP and tc parsers expect
    xdp_prog_id: int
    kind: str = ""  # IFLA_INFO_KIND: "veth", "bridge"... ("" for a physical NIC)


def list_interfaces() -> list[Interface]:
    """Interfaces of the current network namespace."""
    with _pyroute2().IPRoute() as ipr:
        return [_interface(link) for link in ipr.get_links()]


def _interface(link) -> Interface:
    xdp = link.get_attr("IFLA_XDP")
    prog_id = (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0
    info = link.get_attr("IFLA_LINKINFO")
    return Interface(
        index=link["index"],
        name=link.get_attr("IFLA_IFNAME"),
        up=bool(link["flags"] & _IFF_UP),
        ethernet=link["ifi_type"] in (_ARPHRD_ETHER, _ARPHRD_LOOPBACK),
        xdp_prog_id=prog_id,
        kind=(info.get_attr("IFLA_INFO_KIND") or "") if info else "",
    )


def select_interfaces(config: WatchConfig) -> list[Interface]:
    """The interfaces to attach to: those named, else every one that is up but lo."""
    links = list_interfaces()
    if config.ifaces:
        by_name = {link.name: link for link in links}
        unknown = [name for name in config.ifaces if name not in by_name]
        if unknown:
            raise PktfateError(
                f"no interface named {', '.join(unknown)} in this network namespace "
                "(see 'ip link')"
            )
        return [by_name[name] for name in config.ifaces]
    return [link for link in links if link.up and link.name != "lo"]


# ---------------------------------------------------------------- state file


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


def _pid_alive(pid: int) -> bool:
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
        if not _pid_alive(record.get("pid", 0)):
            record["_path"] = str(path)
            found.append(record)
    return found


# ---------------------------------------------------------------- attachments


@dataclass
class AttachReport:
    """What got attached where, and what could not be, for the start banner."""

    xdp: dict[str, str] = field(default_factory=dict)  # iface -> mode
    tc: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# Native XDP on a veth switches the device to a NAPI receive path of its own,
# which costs packet rate whatever the program does (measured in bench/): an
# observer takes the generic hook there. Elsewhere, native where the driver has it.
GENERIC_FIRST_KINDS = ("veth",)


def _xdp_attach(ipr, iface: Interface, fd: int) -> str:
    """Attach in native mode where the driver has it (generic first on veth), else
    generic. Returns the mode. UPDATE_IF_NOEXIST: an interface that already runs an
    XDP program keeps it, and pktfate does without XDP there."""
    last_error: Exception | None = None
    modes = [("native", XDP_FLAGS_DRV_MODE), ("generic", XDP_FLAGS_SKB_MODE)]
    if iface.kind in GENERIC_FIRST_KINDS:
        modes.reverse()
    for mode, flag in modes:
        try:
            ipr.link(
                "set",
                index=iface.index,
                xdp={"attrs": [("IFLA_XDP_FD", fd),
                               ("IFLA_XDP_FLAGS", flag | XDP_FLAGS_UPDATE_IF_NOEXIST)]},
            )
            return mode
        except Exception as exc:  # NetlinkError, but pyroute2 has several kinds
            last_error = exc
            if getattr(exc, "code", None) == errno.EBUSY:
                break
    raise PktfateError(f"XDP refused on {iface.name}: {last_error}")


def _xdp_prog_id(ipr, index: int) -> int:
    links = ipr.get_links(index)
    return _interface(links[0]).xdp_prog_id if links else 0


def _xdp_detach(ipr, index: int, mode: str) -> None:
    flag = XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE
    ipr.link("set", index=index,
             xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flag)]})


@contextmanager
def _xdp_attached(ipr, iface: Interface, fd: int, state: StateFile,
                  report: AttachReport) -> Iterator[None]:
    if iface.xdp_prog_id:
        report.skipped.append(f"XDP on {iface.name}: another XDP program is attached there")
        yield
        return
    entry = {"index": iface.index, "name": iface.name, "mode": "pending", "prog_id": 0}
    state.add("xdp", entry)
    try:
        entry_mode = _xdp_attach(ipr, iface, fd)
    except PktfateError as exc:
        state.drop("xdp", entry)
        report.skipped.append(str(exc))
        yield
        return
    attached = dict(entry, mode=entry_mode, prog_id=_xdp_prog_id(ipr, iface.index))
    state.drop("xdp", entry)
    state.add("xdp", attached)
    report.xdp[iface.name] = entry_mode
    try:
        yield
    finally:
        if _xdp_prog_id(ipr, iface.index) == attached["prog_id"]:
            _xdp_detach(ipr, iface.index, entry_mode)
        state.drop("xdp", attached)


def _has_clsact(ipr, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=index))


def _filter_name(direction: str) -> str:
    return f"{TC_FILTER_PREFIX}{os.getpid()}-{direction}"


def _our_filters(ipr, index: int, parent: int, name: str | None = None) -> list:
    found = []
    for flt in ipr.get_filters(index=index, parent=parent):
        opts = flt.get_attr("TCA_OPTIONS")
        fname = opts.get_attr("TCA_BPF_NAME") if opts else None
        if fname and fname.startswith(TC_FILTER_PREFIX) and (name is None or fname == name):
            found.append(flt)
    return found


def _delete_filter(ipr, index: int, parent: int, flt) -> None:
    prio = flt["info"] >> 16
    ipr.tc("del-filter", "bpf", index, flt["handle"], parent=parent, prio=prio)


@contextmanager
def _tc_attached(ipr, iface: Interface, fds: dict[str, int], state: StateFile,
                 report: AttachReport) -> Iterator[None]:
    created = not _has_clsact(ipr, iface.index)
    entry = {"index": iface.index, "name": iface.name, "created_clsact": created,
             "filters": [_filter_name(d) for d in fds]}
    state.add("tc", entry)
    try:
        if created:
            ipr.tc("add", "clsact", iface.index)
        for direction, fd in fds.items():
            parent = TC_INGRESS_PARENT if direction == "in" else TC_EGRESS_PARENT
            ipr.tc("add-filter", "bpf", iface.index, ":1", fd=fd, name=_filter_name(direction),
                   parent=parent, classid=1, direct_action=True)
    except Exception as exc:
        _tc_remove(ipr, entry)
        state.drop("tc", entry)
        report.skipped.append(f"tc on {iface.name}: {exc}")
        yield
        return
    report.tc.append(iface.name)
    try:
        yield
    finally:
        _tc_remove(ipr, entry)
        state.drop("tc", entry)


def _tc_remove(ipr, entry: dict) -> None:
    """Remove the named filters, and the clsact qdisc if pktfate created it and
    nothing else uses it."""
    index = entry["index"]
    if not ipr.get_links(index):
        return
    for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
        for name in entry["filters"]:
            for flt in _our_filters(ipr, index, parent, name):
                _delete_filter(ipr, index, parent, flt)
    if entry.get("created_clsact") and _has_clsact(ipr, index):
        in_use = any(ipr.get_filters(index=index, parent=p)
                     for p in (TC_INGRESS_PARENT, TC_EGRESS_PARENT))
        if not in_use:
            ipr.tc("del", "clsact", index)


# ---------------------------------------------------------------- the tracer


DRAIN_BUDGET = 4096  # events per drain(): a tenth of a second of Python work or so


def _release_compiler_memory() -> None:
    """Give back to the system the heap LLVM used to compile (tens of MB that glibc
    would otherwise keep for this process's lifetime)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Tracer:
    """Compiled programs, attached; events flow to `on_event` as RawEvents."""

    def __init__(self, config: WatchConfig, kernel: KernelInfo,
                 on_event: Callable[[RawEvent], None]):
        self.config = config
        self.kernel = kernel
        self.on_event = on_event
        self.report = AttachReport()
        self._stack = ExitStack()
        self._bpf = None
        self._error: BaseException | None = None
        self._drained = 0

    def __enter__(self) -> Tracer:
        if os.geteuid() != 0:
            raise PktfateError("pktfate watch needs root (BPF and netlink): run it with sudo")
        try:
            self._stack.__enter__()
            self._start()
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.__exit__(*exc_info)

    def _start(self) -> None:
        bcc = _bcc()
        interfaces = select_interfaces(self.config)
        try:
            bpf = bcc.BPF(text=render_source(),
                          cflags=self.config.cflags(self.kernel))
        except Exception as exc:
            raise PktfateError(f"the BPF programs did not compile or load: {exc}") from exc
        self._bpf = bpf
        _release_compiler_memory()
        self._stack.callback(bpf.cleanup)  # detaches the tracepoints bcc attached
        self._fill_filter_maps(bpf)
        bpf["pf_events"].open_ring_buffer(self._on_ring)
        if interfaces:
            self._attach_interfaces(bcc, bpf, interfaces)

    def _fill_filter_maps(self, bpf) -> None:
        ports = bpf["pf_ports"]
        for port in self.config.ports:
            ports[ports.Key(port)] = ports.Leaf(1)
        hosts = bpf["pf_hosts"]
        for key in self.config.host_keys():
            hk = hosts.Key()
            for i in range(4):
                hk.a[i] = int.from_bytes(key[4 * i:4 * i + 4], "little")
            hosts[hk] = hosts.Leaf(1)

    def _attach_interfaces(self, bcc, bpf, interfaces: list[Interface]) -> None:
        ipr = self._stack.enter_context(_pyroute2().IPRoute())
        state = StateFile(self.kernel.netns)
        self._stack.callback(state.remove)
        xdp_fn = bpf.load_func("pf_xdp", bcc.BPF.XDP) if self.config.xdp else None
        tc_fds = {}
        if self.config.tc:
            tc_fds = {"in": bpf.load_func("pf_tc_ingress", bcc.BPF.SCHED_CLS).fd,
                      "out": bpf.load_func("pf_tc_egress", bcc.BPF.SCHED_CLS).fd}
        for iface in interfaces:
            if not iface.ethernet:
                self.report.skipped.append(f"{iface.name}: not an Ethernet device")
                continue
            if xdp_fn is not None:
                self._stack.enter_context(
                    _xdp_attached(ipr, iface, xdp_fn.fd, state, self.report))
            if tc_fds:
                self._stack.enter_context(_tc_attached(ipr, iface, tc_fds, state, self.report))

    def _on_ring(self, _ctx, data, size) -> int:
        # ctypes would print and swallow an exception raised here: keep it, and
        # stop consuming (a negative return), so that drain() raises it.
        if self._error is not None:
            return -1
        try:
            if size >= ctypes.sizeof(RawEvent):
                # Decoded before this returns: the ring's memory is read in place.
                self.on_event(ctypes.cast(data, ctypes.POINTER(RawEvent)).contents)
        except BaseException as exc:
            self._error = exc
            return -1
        self._drained += 1
        # Under a flood the ring never empties: stop after a budget (this event is
        # consumed already) so that the caller gets to look at its signals.
        return -1 if self._drained >= DRAIN_BUDGET else 0

    def drain(self) -> int:
        """Deliver the events waiting in the ring buffer, DRAIN_BUDGET at most; raise
        what the event handler raised (a closed output pipe, for instance). Returns
        how many were delivered."""
        self._drained = 0
        self._bpf.ring_buffer_consume()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._drained

    def stats(self) -> dict:
        """Per hook, summed over CPUs: events that matched the filter, events lost
        (no room in the ring buffer), events sampled out; and the events the
        aggregation table had no room for."""
        table = self._bpf["pf_stats"]
        totals = [sum(table[ctypes.c_int(slot)]) for slot in range(STAT_SLOTS)]
        return {"matched": {name: totals[num] for num, name in HOOKS.items()},
                "lost": {name: totals[STAT_LOST + num] for num, name in HOOKS.items()},
                "sampled": {name: totals[STAT_SAMPLED + num] for num, name in HOOKS.items()},
                "agg_full": totals[STAT_AGG_FULL]}

    def aggregates(self) -> list[tuple[RawAggKey, int]]:
        """The kernel's exact counts, per hook, reason and flow."""
        return [(RawAggKey.from_buffer_copy(bytes(key)), int(sum(per_cpu)))
                for key, per_cpu in self._bpf["pf_agg"].items()]


# ---------------------------------------------------------------- cleanup


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
            ipr = _pyroute2().IPRoute(netns=netns) if netns else _pyroute2().IPRoute()
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
            if links and _interface(links[0]).xdp_prog_id == entry.get("prog_id"):
                _xdp_detach(ipr, entry["index"], entry["mode"])
                done.append(f"{label}: removed XDP program from {entry['name']}")
    # tc filters carry pktfate's name: find them whether or not a state file says so.
    for link in ipr.get_links():
        iface = _interface(link)
        for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
            for flt in _our_filters(ipr, iface.index, parent):
                owner = flt.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME")
                if _filter_owner_alive(owner):
                    continue
                _delete_filter(ipr, iface.index, parent, flt)
                done.append(f"{label}: removed tc filter {owner} from {iface.name}")
    for record in states:
        for entry in record.get("tc", []):
            if entry.get("created_clsact") and _link_exists(ipr, entry["index"]):
                _tc_remove(ipr, dict(entry, filters=[]))
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
    return pid != os.getpid() and _pid_alive(pid)


def resolve_ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def local_addresses() -> set[str]:
    """Every address configured in the current network namespace."""
    with _pyroute2().IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()
                if a.get_attr("IFA_ADDRESS")}


def route_back(addr: str) -> dict:
    """How this namespace would route to `addr`: {'oif': name} ({} if no route)."""
    with _pyroute2().IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=addr)
        except Exception:  # no route: pyroute2 raises NetlinkError (ENETUNREACH)
            return {}
    oif = routes[0].get_attr("RTA_OIF") if routes else None
    return {"oif": resolve_ifname(oif)} if oif else {}


TX_CHECKSUM_FEATURES = ("tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6")


def tx_checksum_offload(ifname: str) -> bool | None:
    """Whether `ifname` leaves transmit checksums to offload (ethtool's 'tx'
    features, over netlink); None when the features cannot be read."""
    try:
        from pyroute2.ethtool import Ethtool

        ethtool = Ethtool()
    except Exception:
        return None
    try:
        features = ethtool.get_features(ifname).features
        return any(features[name].enable for name in TX_CHECKSUM_FEATURES if name in features)
    except Exception:
        return None
    finally:
        ethtool.close()
