#!/usr/bin/env python3
"""Helpers for bench/run.sh: /proc sampling, load-tool output parsing, and the final report.

Subcommands (all print to stdout):
  ports N                   N distinct free TCP ports on 127.0.0.1
  cpu PID...                utime and stime clock ticks ("USER SYS") summed over each PID and
                            its descendants
  cores CPU...              busy and total clock ticks of each CPU, from /proc/stat
  rss PID...                VmRSS in KiB summed over each PID and its descendants
  tree PID...               each PID and its descendants, comma-separated (for perf -p)
  meta ...                  describe the machine, tool versions and settings as JSON
  record ...                parse one wrk/h2load run and append it as a JSON line
  report ...                aggregate the runs (medians, ratios to nginx) into JSON and markdown
"""

import argparse
import json
import os
import re
import socket
import statistics
import sys

# --- /proc -------------------------------------------------------------------------------------


def _children_map():
    """ppid -> [pid] for every live process (one pass over /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _tree(pids):
    """The given PIDs and all their descendants (nginx master + workers, for instance)."""
    children = _children_map()
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids):
    """[utime, stime] of every process in the trees (threads included: /proc/PID/stat sums them)."""
    user = system = 0
    for pid in _tree(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # Fields 14 and 15 of proc(5) (utime, stime); fields[] starts at field 3.
        user += int(fields[11])
        system += int(fields[12])
    return [user, system]


def core_ticks(cpus):
    """[busy, total] ticks per CPU; busy is everything but idle and iowait."""
    rows = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values[:8]]
                total = sum(v)
                rows[int(name[3:])] = [total - v[3] - v[4], total]
    return [x for cpu in cpus for x in rows[cpu]]


def rss_kib(pids):
    total = 0
    for pid in _tree(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def free_ports(n):
    """n distinct free ports on 127.0.0.1 (all held open until every one is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- load tool output ----------------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(text):
    """req/s, p50/p99 (ms), requests completed and failures from `wrk --latency` output."""
    out = {}
    m = re.search(r"^\s*(\d+) requests in ", text, re.M)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else None
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        out[key] = _ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    out["errors"] = errors
    return out


def _percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def parse_h2load(text, log_path):
    """req/s, requests and failures from h2load's summary; p50/p99 from its --log-file."""
    out = {}
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        out["requests"] = int(m.group(4))
        out["errors"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    else:
        out["requests"], out["errors"] = 0, 1
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["errors"] += int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    # Columns: start (µs since epoch), status, µs to the end of the response.
    latencies = []
    if log_path and os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].strip() != "-1":
                    latencies.append(int(parts[2]) / 1000.0)
    latencies.sort()
    out["p50_ms"] = _percentile(latencies, 0.50)
    out["p99_ms"] = _percentile(latencies, 0.99)
    if not out["requests"] or out["rps"] is None:
        out["rps"] = None
    return out


def cmd_meta(a):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    meta = {
        "started_utc": a.started,
        "loadavg_start": _loadavg(),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": model,
            "kernel": os.uname().release,
        },
        "pinning": {"proxy_cpu": a.proxy_cpu, "load_cpu": a.load_cpu},
        "rounds": a.rounds,
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "proxies": a.proxies.split(),
        "loads": a.loads.split(),
        "h2load": {"clients": a.h2_clients, "streams": a.h2_streams},
        "body_bytes": a.body_bytes,
        "nginx_upstream_keepalive": a.nginx_keepalive,
        "versions": dict(v.split("=", 1) for v in a.version),
    }
    with open(a.out, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def _ints(text):
    return [int(x) for x in text.split()]


def cmd_record(a):
    with open(a.output) as f:
        text = f.read()
    parsed = parse_wrk(text) if a.tool == "wrk" else parse_h2load(text, a.h2load_log)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    requests = parsed["requests"]
    # Busy share of each core over the run: is the proxy's core saturated, is the load
    # generator's, and how much of the proxy's core went to anything else.
    before = [int(x) for x in a.cores_before.split()]
    after = [int(x) for x in a.cores_after.split()]
    d = [y - x for x, y in zip(before, after)]
    user, system = (y - x for x, y in zip(_ints(a.cpu_before), _ints(a.cpu_after)))
    proxy_ticks = user + system
    up_ticks = sum(_ints(a.up_cpu_after)) - sum(_ints(a.up_cpu_before))
    measured = a.proxy != "none" and requests

    def per_request(ticks):
        return ticks * tick_us / requests if measured else None

    cores = {
        "proxy_core_busy_pct": 100 * d[0] / d[1] if d[1] else None,
        "proxy_core_other_pct": 100 * max(0, d[0] - proxy_ticks) / d[1] if d[1] else None,
        "load_core_busy_pct": 100 * d[2] / d[3] if d[3] else None,
    }
    row = {
        "round": a.round,
        "proxy": a.proxy,
        "load": a.load,
        **parsed,
        "proxy_cpu_us_per_req": per_request(proxy_ticks),
        "proxy_user_us_per_req": per_request(user),
        "proxy_sys_us_per_req": per_request(system),
        "proxy_syscalls_per_req": (
            a.syscalls / requests if measured and a.syscalls is not None else None
        ),
        "upstream_cpu_us_per_req": up_ticks * tick_us / requests if requests else None,
        **cores,
        "rss_idle_kib": a.rss_idle if a.proxy != "none" else None,
        "rss_load_kib": a.rss_load if a.proxy != "none" else None,
    }
    with open(a.runs, "a") as f:
        f.write(json.dumps(row) + "\n")
    shown = {k: row[k] for k in ("rps", "p50_ms", "p99_ms", "proxy_cpu_us_per_req", "errors")}
    print(f"  round {a.round} {a.proxy:8} {a.load:8} " + json.dumps(shown), file=sys.stderr)


# --- report --------------------------------------------------------------------------------------

METRICS = [
    # key, column title, format
    ("rps", "req/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("proxy_cpu_us_per_req", "proxy CPU µs/req", "{:.1f}"),
    ("proxy_user_us_per_req", "of it user", "{:.1f}"),
    ("proxy_sys_us_per_req", "of it kernel", "{:.1f}"),
    ("proxy_syscalls_per_req", "syscalls/req", "{:.2f}"),
    ("rss_idle_mib", "RSS idle MiB", "{:.1f}"),
    ("rss_load_mib", "RSS load MiB", "{:.1f}"),
]


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(runs, proxies, loads, unsupported):
    summary = []
    for load in loads:
        for proxy in proxies:
            rows = [r for r in runs if r["proxy"] == proxy and r["load"] == load]
            entry = {"proxy": proxy, "load": load, "rounds": len(rows)}
            if not rows:
                entry["status"] = unsupported.get((proxy, load), "not run")
                summary.append(entry)
                continue
            entry["status"] = "ok"
            if (proxy, load) in unsupported:
                entry["note"] = f"{unsupported[(proxy, load)]} in some rounds"
            for key in (
                "rps",
                "p50_ms",
                "p99_ms",
                "proxy_cpu_us_per_req",
                "proxy_user_us_per_req",
                "proxy_sys_us_per_req",
                "proxy_syscalls_per_req",
                "upstream_cpu_us_per_req",
                "proxy_core_busy_pct",
                "proxy_core_other_pct",
                "load_core_busy_pct",
            ):
                entry[key] = _median(r.get(key) for r in rows)
            for key in ("rss_idle", "rss_load"):
                kib = _median(r.get(f"{key}_kib") for r in rows)
                entry[f"{key}_mib"] = kib / 1024 if kib is not None else None
            entry["errors"] = sum(r.get("errors", 0) for r in rows)
            summary.append(entry)
    by_key = {(e["proxy"], e["load"]): e for e in summary}
    for e in summary:
        ref = by_key.get(("nginx", e["load"]))
        ratios = {}
        for key, _, _ in METRICS:
            v, base = e.get(key), (ref or {}).get(key)
            ratios[key] = v / base if v is not None and base else None
        e["vs_nginx"] = ratios
    return summary


def _other_share(summary):
    other = _median(e.get("proxy_core_other_pct") for e in summary if e["proxy"] != "none")
    return "?" if other is None else f"{other:.0f}%"


def _loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markdown(meta, summary):
    lines = [
        f"### Tidegate vs peers — {meta['started_utc']}",
        "",
        f"Machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu_model']}, "
        f"Linux {meta['machine']['kernel']}. "
        f"Proxy pinned to CPU {meta['pinning']['proxy_cpu']} with one worker; "
        f"load generator and upstream (nginx `return 200`, {meta['body_bytes']}-byte body) "
        f"on CPU {meta['pinning']['load_cpu']}. "
        f"{meta['rounds']} round(s) of {meta['duration_s']} s per load, A B A B order; "
        "medians over rounds, ratio to nginx in parentheses.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ". "
        f"Load average at start {meta['loadavg_start']}, at end {meta.get('loadavg_end', '?')}; "
        f"other processes took a median {_other_share(summary)} of the proxy's CPU during loads.",
        "",
        "| load | proxy | " + " | ".join(t for _, t, _ in METRICS) + " | CPU busy %: proxy (others) / load | errors |",
        "|---|---|" + "---:|" * (len(METRICS) + 2),
    ]
    for e in summary:
        if e["status"] != "ok":
            cells = ["n/a"] * (len(METRICS) + 1) + [e["status"]]
        else:
            cells = []
            for key, _, fmt in METRICS:
                v, ratio = e.get(key), e["vs_nginx"].get(key)
                if v is None:
                    cells.append("—")
                elif ratio is None or e["proxy"] == "nginx":
                    cells.append(fmt.format(v))
                else:
                    cells.append(f"{fmt.format(v)} ({ratio:.2f}×)")
            def pct(key):
                v = e.get(key)
                return "—" if v is None else f"{v:.0f}"

            cells.append(
                f"{pct('proxy_core_busy_pct')} ({pct('proxy_core_other_pct')}) / "
                f"{pct('load_core_busy_pct')}"
            )
            cells.append(str(e["errors"]) + (f" ({e['note']})" if e.get("note") else ""))
        lines.append(f"| {e['load']} | {e['proxy']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Loads: `h1-64`/`h1-256` = wrk, HTTP/1.1 keep-alive, 64/256 connections; "
        f"`h2c` = h2load, prior knowledge, {meta['h2load']['clients']} connections × "
        f"{meta['h2load']['streams']} streams. `none` = wrk/h2load straight to the upstream. "
        "Proxy CPU = utime+stime of all the proxy's processes from /proc over the run, "
        "divided by requests completed, then split into its user-space and kernel parts "
        "(utime and stime). Syscalls/req (only with SYSCALLS=1) = "
        "`perf stat -e raw_syscalls:sys_enter` on the proxy over the run, divided by requests "
        "completed. CPU busy % = share of the proxy's core busy during the "
        "load, in parentheses the part of it not charged to the proxy (other processes, "
        "interrupts: a high figure means the row is noisy), then the share of the load "
        "generator's core busy (near 100: the load side, not the proxy, set req/s and latency).",
    ]
    return "\n".join(lines) + "\n"


def cmd_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    runs = []
    if os.path.exists(a.runs):
        with open(a.runs) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    unsupported = {}
    if a.unsupported and os.path.exists(a.unsupported):
        with open(a.unsupported) as f:
            for line in f:
                if line.strip():
                    proxy, load, why = line.rstrip("\n").split("\t", 2)
                    unsupported[(proxy, load)] = why
    meta.setdefault("loadavg_end", _loadavg())
    summary = aggregate(runs, meta["proxies"], meta["loads"], unsupported)
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=2)
        f.write("\n")
    md = markdown(meta, summary)
    with open(a.md, "w") as f:
        f.write(md)
    print(md, end="")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ports").add_argument("n", type=int)
    for name in ("cpu", "rss", "tree"):
        sp = sub.add_parser(name)
        sp.add_argument("pids", nargs="+", type=int)
    m = sub.add_parser("meta")
    m.add_argument("--out", required=True)
    m.add_argument("--started", required=True)
    m.add_argument("--proxy-cpu", type=int, required=True)
    m.add_argument("--load-cpu", type=int, required=True)
    m.add_argument("--rounds", type=int, required=True)
    m.add_argument("--duration", type=int, required=True)
    m.add_argument("--warmup", type=int, required=True)
    m.add_argument("--proxies", required=True)
    m.add_argument("--loads", required=True)
    m.add_argument("--h2-clients", type=int, required=True)
    m.add_argument("--h2-streams", type=int, required=True)
    m.add_argument("--body-bytes", type=int, required=True)
    m.add_argument("--nginx-keepalive", type=int, required=True)
    m.add_argument("--version", action="append", default=[], help="name=version")
    sub.add_parser("cores").add_argument("cpus", nargs="+", type=int)
    r = sub.add_parser("record")
    r.add_argument("--runs", required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--proxy", required=True)
    r.add_argument("--load", required=True)
    r.add_argument("--tool", choices=["wrk", "h2load"], required=True)
    r.add_argument("--output", required=True)
    r.add_argument("--h2load-log")
    r.add_argument("--cores-before", required=True, help="proxy core busy/total, load core busy/total")
    r.add_argument("--cores-after", required=True)
    for name in ("cpu-before", "cpu-after", "up-cpu-before", "up-cpu-after"):
        r.add_argument(f"--{name}", required=True, help="utime and stime ticks: USER SYS")
    for name in ("rss-idle", "rss-load"):
        r.add_argument(f"--{name}", type=int, required=True)
    r.add_argument("--syscalls", type=int, help="syscalls the proxy made over the run")
    rep = sub.add_parser("report")
    rep.add_argument("--meta", required=True)
    rep.add_argument("--runs", required=True)
    rep.add_argument("--unsupported")
    rep.add_argument("--json", required=True)
    rep.add_argument("--md", required=True)
    a = p.parse_args()
    if a.cmd == "ports":
        print(" ".join(map(str, free_ports(a.n))))
    elif a.cmd == "cpu":
        print(" ".join(map(str, cpu_ticks(a.pids))))
    elif a.cmd == "cores":
        print(" ".join(map(str, core_ticks(a.cpus))))
    elif a.cmd == "tree":
        print(",".join(map(str, _tree(a.pids))))
    elif a.cmd == "rss":
        print(rss_kib(a.pids))
    elif a.cmd == "meta":
        cmd_meta(a)
    elif a.cmd == "record":
        cmd_record(a)
    else:
        cmd_report(a)


if __name__ == "__main__":
    main()
