"""What people open, opened as they would: the pcapng capture in tshark and
capinfos (Wireshark's own readers), the HTML report in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pktfate.lab.scenarios import ADDRESSES

from .conftest import matching, wait_for_file

pytestmark = pytest.mark.integration
PKTFATE = [sys.executable, "-m", "pktfate"]
RECORDINGS = sorted((Path(__file__).parents[1] / "data" / "lab").glob("*.jsonl"))
# The reports also looked at as pixels (a screenshot costs seconds): the founding
# incident, a busy server's many flows, a port published to a container, a router.
SCREENSHOTS = {"checksum", "busy-server", "nat-healthy", "ttl-expired"}
SERVER = ADDRESSES["server_ip"]


def _tshark(*args: str) -> list[list[str]]:
    proc = subprocess.run(["tshark", *args, "-T", "fields", "-E", "separator=|"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines()]


def _capinfos(path: Path) -> str:
    proc = subprocess.run(["capinfos", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # capinfos refuses a file it cannot read whole
    return proc.stdout


@pytest.fixture(scope="module")
def checksum(lab):
    assert shutil.which("tshark") and shutil.which("capinfos"), "make setup-dev installs tshark"
    lab.up("checksum")
    return lab


def _traffic(lab) -> None:
    lab.sh("client", f"ping -c 2 -i 0.3 -W 1 {SERVER}")
    lab.sh("client", f"curl -sS -m 2 -o /dev/null http://{SERVER}/", check=False)


def test_pcap_holds_every_watched_packet_with_its_hook_and_fate(checksum, watch, tmp_path):
    capture = tmp_path / "run.pcapng"
    w = watch("--port", "80", "--pcap", str(capture))
    _traffic(checksum)
    lines = w.stop()
    packets = [p for p in matching(lines, kind="packet") if p["hook"] != "tcp-state"]
    rows = _tshark("-r", str(capture), "-e", "frame.interface_name", "-e", "frame.comment",
                   "-e", "ip.src", "-e", "ip.dst", "-e", "frame.p2p_dir")
    # Every packet event of the JSON is a frame, in order, at its hook.
    names = {"tc-ingress": "tc-ingress:eth0", "tc-egress": "tc-egress:eth0",
             "drop": "kfree_skb", "tcp-bad-csum": "tcp_bad_csum"}
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (names[p["hook"]], p["src"], p["dst"]) for p in packets]
    drops = [r for r in rows if r[0] == "kfree_skb"]
    assert len(drops) >= 2 and {r[1] for r in drops} == {"DROPPED TCP_CSUM at tcp_v4_rcv"}
    arrivals = [r for r in rows if r[0] == "tc-ingress:eth0" and "csum" in r[1]]
    assert {r[1] for r in arrivals} == {"arrived tc eth0 ttl 63 csum pseudo-header-only"}
    assert {r[4] for r in rows if r[0] == "tc-ingress:eth0"} == {"1"}  # received
    assert {r[4] for r in rows if r[0] == "tc-egress:eth0"} == {"0"}  # sent
    # The SYNs' own checksum bytes: Wireshark finds them bad, as the kernel did.
    verdicts = _tshark("-r", str(capture), "-o", "tcp.check_checksum:TRUE",
                       "-Y", 'frame.interface_name == "kfree_skb"', "-e", "tcp.checksum.status")
    assert verdicts and {v[0] for v in verdicts} == {"0"}  # 0: bad
    info = _capinfos(capture)
    assert f"Number of packets:   {len(packets)}" in info
    assert "Capture comment:     DIAGNOSIS 1. [tcp-bad-checksum]" in info


def test_pcap_to_a_pipe_is_read_as_it_comes(checksum, tmp_path):
    """--pcap -: the capture on standard output (into tshark), the report on
    standard error; the diagnosis in a section of its own at the end."""
    ready = tmp_path / "ready"
    watch = subprocess.Popen(checksum.exec_argv("server", [
        *PKTFATE, "watch", "--port", "80", "--pcap", "-", "--ready-file", str(ready)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_file(ready, watch)
        _traffic(checksum)
        watch.send_signal(signal.SIGINT)
        capture, report = watch.communicate(timeout=120)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, report
    assert b"DIAGNOSIS" in report and b"[tcp-bad-checksum]" in report
    proc = subprocess.run(["tshark", "-r", "-", "-T", "fields", "-e", "frame.comment"],
                          input=capture, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().count("DROPPED TCP_CSUM at tcp_v4_rcv") >= 2
    (tmp_path / "piped.pcapng").write_bytes(capture)
    assert "[tcp-bad-checksum]" in _capinfos(tmp_path / "piped.pcapng")


def test_pcap_stays_readable_when_the_watch_is_killed(checksum, watch, tmp_path):
    """SIGKILL: no diagnosis, but every drain's packets were flushed whole."""
    capture = tmp_path / "killed.pcapng"
    w = watch("--port", "80", "--pcap", str(capture))
    _traffic(checksum)
    expected = len([line for line in _complete_lines(w.text) if '"kind": "packet"' in line
                    and '"hook": "tcp-state"' not in line])
    w.kill()
    assert expected > 0
    info = _capinfos(capture)
    assert f"Number of packets:   {expected}" in info
    assert "the diagnosis replaces this when the watch ends" in info


def _complete_lines(text: str) -> list[str]:
    return text[:text.rfind("\n") + 1].splitlines()


# --- the HTML report ---------------------------------------------------------

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars"]
# Where the first ladder is drawn, as the browser laid the page out: written into
# the page's title by a script added to a copy of the report (the report itself
# has none), then read back from the DOM Chromium dumps.
PROBE = ("<script>window.addEventListener('load', () => { const r = document"
         ".querySelector('figure.ladder svg').getBoundingClientRect(); document.title = "
         "'at ' + [r.left, r.top, r.width, r.height].map(Math.round).join(' '); });</script>")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    assert shutil.which("chromium"), "make setup-dev installs chromium"
    return subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_report_renders_in_chromium(recording, tmp_path):
    page = tmp_path / "report.html"
    proc = subprocess.run([*PKTFATE, "report", str(recording), "-o", str(page)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    # Nothing fetched to render it: no script, stylesheet, image, font or frame.
    assert not re.search(r"<(script|link|img|iframe|object)\b|url\(|@import|\bsrc=", html)
    lines = [json.loads(line) for line in recording.read_text().splitlines()]
    top = next(line for line in lines if line["kind"] == "diagnosis")["findings"][0]["cause"]

    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</head>", PROBE + "</head>"))
    dom = _chromium(tmp_path, "--dump-dom", probed.as_uri()).stdout
    assert f'data-cause="{top}"' in dom and f"[{top}]" in dom
    assert 'class="timeline"' in dom
    # Each flow the correlator made of the recording has its ladder, and each
    # ladder an arrow, each with a fate.
    flows = [line for line in lines if line["kind"] == "flow"]
    assert dom.count('<figure class="ladder"') >= len(flows) > 0
    for fate in {word for word in _fates(dom)}:
        assert fate in ("dropped", "answered by the kernel", "delivered", "sent", "forwarded")
    assert dom.count('<g class="packet"') >= dom.count('<figure class="ladder"')

    left, top_px, width, height = map(int, dom.split("<title>at ", 1)[1].split("<")[0].split())
    assert width > 300 and height > 40  # laid out, at a readable size
    if recording.stem not in SCREENSHOTS:
        return
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1000,6000", f"--screenshot={shot}", probed.as_uri())
    _assert_drawn(shot, (left, top_px, left + width, top_px + height))


@pytest.mark.parametrize("recording", [r for r in RECORDINGS if r.stem in SCREENSHOTS],
                         ids=lambda p: p.stem)
def test_report_fits_a_phone(recording, tmp_path):
    """At a phone's width (390 px) nothing sticks out sideways: the text wraps, the
    diagrams shrink to the page (their SVG keeps its proportions)."""
    page = tmp_path / "report.html"
    subprocess.run([*PKTFATE, "report", str(recording), "-o", str(page)], check=True,
                   capture_output=True, timeout=120)
    probe = ("<script>window.addEventListener('load', () => { document.title = 'widths ' + "
             "document.documentElement.scrollWidth + ' ' + window.innerWidth; });</script>")
    page.write_text(page.read_text().replace("</head>", probe + "</head>"))
    dom = _chromium(tmp_path, "--window-size=390,800", "--dump-dom", page.as_uri()).stdout
    scroll, inner = map(int, dom.split("<title>widths ", 1)[1].split("<")[0].split())
    assert 0 < scroll <= inner, (scroll, inner)


def _fates(dom: str) -> list[str]:
    return [part.split('"', 1)[0] for part in dom.split('data-fate="')[1:]]


def _assert_drawn(shot: Path, box: tuple[int, int, int, int]) -> None:
    """The page is not blank, and the ladder's box holds the arrows' colours."""
    from PIL import Image

    from pktfate.output.report import FATES

    image = Image.open(shot).convert("RGB")
    assert len(image.getcolors(1 << 24)) > 10  # not blank: text, bars, arrows
    ladder = image.crop(box)
    colours = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in FATES.values()]

    def near(pixel: tuple[int, ...]) -> bool:  # a line's edge is blended with the page
        return any(sum(abs(a - b) for a, b in zip(pixel, c)) < 60 for c in colours)

    assert any(near(pixel) for _, pixel in ladder.getcolors(1 << 24)), \
        f"no arrow's colour in the ladder's box {box}"


def test_report_of_several_hosts_draws_their_paths(tmp_path):
    """Three hosts' recordings: the page starts with the diagnosis across the hosts
    (the router, where the checksum should have been completed) and a ladder whose
    lanes are the hosts."""
    paths = Path(__file__).parents[1] / "data" / "paths" / "checksum"
    page = tmp_path / "hosts.html"
    proc = subprocess.run([*PKTFATE, "report", *(str(paths / f"{h}.jsonl") for h in (
        "server", "client", "router")), "-o", str(page)], capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    across = dom.split('<section class="across"', 1)[1].split("</section>", 1)[0]
    assert 'data-cause="checksum-not-completed" data-host="router"' in across
    lanes = [part.split(">", 1)[1].split("<", 1)[0]
             for part in across.split('data-lane="')[1:]]
    assert lanes == ["client", "router", "server"]
    assert across.count('<g class="packet" data-fate="dropped"') >= 1
    assert [s.split('"', 1)[0] for s in dom.split('data-host="')[1:]][-3:] == [
        "client", "router", "server"]
