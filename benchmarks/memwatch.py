"""Peak resident memory and CPU time of a process and its descendants (the driver, Ray's workers and daemons), polled from /proc."""

from __future__ import annotations

import os

# A Ray worker process renames itself after what it runs (ray::IDLE between tasks): the most specific
# title it ever had names it.
ROLE_ORDER = ("driver", "ray::_RemoteWorker", "ray::_prep_task", "ray::IDLE")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def descendants(root: int) -> list[int]:
    """`root` and every process below it (only ours: other users' Ray clusters on the box are not)."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read(pid: int) -> tuple[str, dict[str, int]] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_ticks = int(fields[11]) + int(fields[12])  # utime + stime
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        mem = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                    key, value = line.split(":")
                    mem[key] = int(value.split()[0]) * 1024
        mem["cpu_ticks"] = cpu_ticks
        return cmd, mem
    except OSError:
        return None


def role_of(cmd: str, is_root: bool) -> str:
    if is_root:
        return "driver"
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    first = cmd.split()[0] if cmd else "?"
    return os.path.basename(first) if "python" not in first else " ".join(
        os.path.basename(a) for a in cmd.split()[:3] if not a.startswith("-"))


class MemWatch:
    """Call sample(root_pid) every fraction of a second; peaks() gives, per process, its role and its
    peaks of VmRSS (everything resident, including the pages of Ray's shared-memory object store it has
    touched), of `private` (VmRSS less that shared memory: its heap, code and mapped files) and of
    RssAnon (its heap alone)."""

    def __init__(self):
        self.procs: dict[int, dict] = {}
        self.samples = 0

    def sample(self, root: int) -> None:
        self.samples += 1
        for pid in descendants(root):
            got = _read(pid)
            if got is None or not got[1]:
                continue
            cmd, mem = got
            p = self.procs.setdefault(pid, {"roles": set(), "rss": 0, "private": 0, "anon": 0, "shmem": 0,
                                            "cpu_s": 0.0})
            p["cpu_s"] = max(p["cpu_s"], mem["cpu_ticks"] / CLOCK_TICKS)
            p["roles"].add(role_of(cmd, pid == root))
            p["rss"] = max(p["rss"], mem.get("VmRSS", 0))
            p["private"] = max(p["private"], mem.get("VmRSS", 0) - mem.get("RssShmem", 0))
            p["anon"] = max(p["anon"], mem.get("RssAnon", 0))
            p["shmem"] = max(p["shmem"], mem.get("RssShmem", 0))

    def peaks(self) -> list[dict]:
        out = []
        for pid, p in self.procs.items():
            ranked = [r for r in ROLE_ORDER if r in p["roles"]]
            named = sorted(p["roles"] - {"?"}) or ["?"]  # "?": read while the process was starting or ending
            role = ranked[0] if ranked else named[0]
            out.append({"pid": pid, "role": role, "rss": p["rss"], "private": p["private"], "anon": p["anon"],
                        "shmem": p["shmem"], "cpu_s": p["cpu_s"]})
        return sorted(out, key=lambda x: (ROLE_ORDER.index(x["role"]) if x["role"] in ROLE_ORDER else 9, -x["rss"]))

    def by_role(self) -> dict[str, dict]:
        """Per role: how many processes had it, the largest peak among them, their CPU seconds in all
        (as last sampled: up to one sampling interval short)."""
        roles: dict[str, dict] = {}
        for p in self.peaks():
            r = roles.setdefault(p["role"], {"processes": 0, "rss": 0, "private": 0, "anon": 0, "shmem": 0,
                                             "cpu_s": 0.0})
            r["processes"] += 1
            r["cpu_s"] += p["cpu_s"]
            for key in ("rss", "private", "anon", "shmem"):
                r[key] = max(r[key], p[key])
        return roles
