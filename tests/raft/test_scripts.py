"""Transcript tests (after etcd's datadriven files): tests/raft/scripts/*.txt.

A script is a list of blocks, each a command line, a `----` line, then the exact expected
output, blocks separated by a blank line; `#` lines before a command are comments. The
runner executes every command on a fault-free simulated cluster (tests/raft/sim.py) and
compares. `RAFT_REWRITE=1 .venv/bin/pytest tests/raft/test_scripts.py` rewrites the files
with what the code now prints: review the diff as a behaviour change.

Commands:
    cluster 1 2 3 [learners=4] [pre_vote=false] [check_quorum=false] [chunk=N]
        [heartbeat=N] [election=N] [inflight=N] [batch=N] [pad=N]
    campaign N | tick N [COUNT] (one node) | tick-all [COUNT] (every node, delivering)
    stabilize                  deliver until quiet; prints every delivered message
    propose N DATA | conf-change N add-voter|add-learner|remove ID
    read-index N CONTEXT | transfer N TO | compact N
    partition 1 / 2 3 | isolate N | recover | crash N | restart N
    status | log N | reads (released read states)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from raft import ConfChange, ConfChangeType, Config, RaftError, Role
from tests.raft.sim import Network, _fmt_entry

SCRIPTS = Path(__file__).resolve().parent / "scripts"
REWRITE = os.environ.get("RAFT_REWRITE") == "1"


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: list[str]


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        comments: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            break
        command = lines[i].strip()
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i + 1}: expected ---- after {command!r}")
        i += 1
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(comments, command, expected))
    return blocks


def render(blocks: list[Block], outputs: list[list[str]]) -> str:
    chunks = []
    for b, out in zip(blocks, outputs, strict=True):
        chunks.append("\n".join([*b.comments, b.command, "----", *out]))
    return "\n\n".join(chunks) + "\n"


class Runner:
    def __init__(self) -> None:
        self.net: Network | None = None
        self.record: list[str] = []

    @property
    def n(self) -> Network:
        assert self.net is not None, "the script must start with `cluster`"
        return self.net

    def run(self, command: str) -> list[str]:
        word, *args = command.split()
        handler: Callable[[list[str]], list[str] | None] = getattr(
            self, "do_" + word.replace("-", "_")
        )
        self.record.clear()
        try:
            out = handler(args)
        except RaftError as exc:
            return [f"error: {type(exc).__name__}: {exc}"]
        return out if out else ["ok"]

    def do_cluster(self, args: list[str]) -> None:
        ids = [int(a) for a in args if "=" not in a]
        opts = dict(a.split("=") for a in args if "=" in a)
        learners = [int(x) for x in opts.pop("learners", "").split(",") if x]
        cfg = Config(
            election_tick=int(opts.pop("election", 10)),
            heartbeat_tick=int(opts.pop("heartbeat", 1)),
            max_inflight=int(opts.pop("inflight", 64)),
            max_entries_per_append=int(opts.pop("batch", 64)),
            snapshot_chunk_size=int(opts.pop("chunk", 64 * 1024)),
            pre_vote=opts.pop("pre_vote", "true") == "true",
            check_quorum=opts.pop("check_quorum", "true") == "true",
        )
        pad = int(opts.pop("pad", 0))
        assert not opts, f"unknown options {opts}"
        self.net = Network(
            0, ids, config=cfg, learners=learners, snapshot_pad=pad, record=self.record
        )

    def _messages(self) -> list[str]:
        return list(self.record)

    def do_campaign(self, args: list[str]) -> None:
        node = self.n.nodes[int(args[0])]
        node.core.campaign()
        self.n.process(node)

    def do_tick(self, args: list[str]) -> None:
        node = self.n.nodes[int(args[0])]
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            node.core.tick()
            self.n.process(node)

    def do_tick_all(self, args: list[str]) -> list[str]:
        self.n.tick(int(args[0]) if args else 1)
        return self._messages()

    def do_stabilize(self, args: list[str]) -> list[str]:
        self.n.stabilize()
        return self._messages()

    def do_propose(self, args: list[str]) -> list[str]:
        core = self.n.nodes[int(args[0])].core
        index = core.propose(args[1].encode())
        self.n.process(self.n.nodes[int(args[0])])
        return [f"index={index} term={core.term}"]

    def do_conf_change(self, args: list[str]) -> list[str]:
        kind = {
            "add-voter": ConfChangeType.ADD_VOTER,
            "add-learner": ConfChangeType.ADD_LEARNER,
            "remove": ConfChangeType.REMOVE_NODE,
        }[args[1]]
        target = int(args[2])
        if target not in self.n.nodes:
            self.n.add_node(target)
        node = self.n.nodes[int(args[0])]
        index = node.core.propose_conf_change(ConfChange(kind, target))
        self.n.process(node)
        return [f"index={index}"]

    def do_read_index(self, args: list[str]) -> None:
        node = self.n.nodes[int(args[0])]
        committed = max(x.core.committed for x in self.n.nodes.values())
        node.core.read_index(args[1].encode())
        self.n.checker.read_asked(args[1].encode(), committed)
        self.n.process(node)

    def do_reads(self, args: list[str]) -> list[str]:
        return [f"{c.decode()} index={i}" for c, i in sorted(self.n.checker.released.items())]

    def do_transfer(self, args: list[str]) -> None:
        node = self.n.nodes[int(args[0])]
        node.core.transfer_leadership(int(args[1]))
        self.n.process(node)

    def do_compact(self, args: list[str]) -> list[str]:
        snap = self.n.compact(int(args[0]))
        if snap is None:
            return ["nothing to compact"]
        m = snap.meta
        return [f"snapshot index={m.index} term={m.term} bytes={len(snap.data)}"]

    def do_partition(self, args: list[str]) -> None:
        groups: list[list[int]] = [[]]
        for a in args:
            if a == "/":
                groups.append([])
            else:
                groups[-1].append(int(a))
        self.n.partition(*groups)

    def do_isolate(self, args: list[str]) -> None:
        self.n.isolate(int(args[0]))

    def do_recover(self, args: list[str]) -> None:
        self.n.recover()

    def do_crash(self, args: list[str]) -> None:
        self.n.crash(int(args[0]))

    def do_restart(self, args: list[str]) -> None:
        self.n.restart(int(args[0]))

    def do_status(self, args: list[str]) -> list[str]:
        out = []
        for i, node in sorted(self.n.nodes.items()):
            c = node.core
            if not node.alive:
                out.append(f"{i}: down")
                continue
            role = c.role.value if c.role != Role.FOLLOWER else f"follower(lead={c.lead})"
            voters = ",".join(map(str, sorted(c.conf.voters)))
            learners = ",".join(map(str, sorted(c.conf.learners))) or "-"
            out.append(
                f"{i}: {role} term={c.term} vote={c.vote} last={c.log.last_index} "
                f"commit={c.committed} applied={node.sm.applied} "
                f"voters={voters} learners={learners}"
            )
        return out

    def do_log(self, args: list[str]) -> list[str]:
        log = self.n.nodes[int(args[0])].core.log
        head = f"snapshot={log.snap_index}/{log.snapshot.term}"
        return [" ".join([head, *(_fmt_entry(e) for e in log.entries)])]


def run_script(path: Path) -> tuple[str, str]:
    text = path.read_text()
    blocks = parse(text)
    runner = Runner()
    outputs = [runner.run(b.command) for b in blocks]
    return text, render(blocks, outputs)


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.txt")), ids=lambda p: p.stem)
def test_script(path: Path) -> None:
    expected, actual = run_script(path)
    if REWRITE:
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name} differs; RAFT_REWRITE=1 rewrites it"


def test_there_are_scripts() -> None:
    assert len(list(SCRIPTS.glob("*.txt"))) >= 5


def test_parse_and_render_round_trip() -> None:
    text = "# a comment\ncampaign 1\n----\nok\n\nstabilize\n----\n1->2 VOTE term=1\n"
    blocks = parse(text)
    assert [b.command for b in blocks] == ["campaign 1", "stabilize"]
    assert render(blocks, [b.expected for b in blocks]) == text


def test_parse_rejects_a_block_without_separator() -> None:
    with pytest.raises(ValueError, match="expected ----"):
        parse("campaign 1\nok\n")


def test_runner_reports_a_changed_behaviour_and_rewrite_text_is_the_actual(
    tmp_path: Path,
) -> None:
    script = tmp_path / "t.txt"
    script.write_text("cluster 1\n----\nok\n\ncampaign 1\n----\nok\n\nstatus\n----\n1: follower\n")
    expected, actual = run_script(script)
    assert expected != actual
    assert "1: leader term=1" in actual
    script.write_text(actual)  # what RAFT_REWRITE=1 does
    again_expected, again_actual = run_script(script)
    assert again_expected == again_actual


def test_errors_are_part_of_the_transcript(tmp_path: Path) -> None:
    script = tmp_path / "e.txt"
    script.write_text("cluster 1 2 3\n----\nok\n\npropose 2 x\n----\n")
    _, actual = run_script(script)
    assert "error: NotLeader: node 2 is not the leader (no leader known)" in actual
