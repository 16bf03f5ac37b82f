#!/usr/bin/env python3
"""Run smbtorture tests against an SMB server on 127.0.0.1 and report per-test results.

    torture_run.py --port PORT --localdir DIR (--list FILE | --all [--filter REGEX])
                   [--out TSV] [--logdir DIR] [--test-timeout S] [--group-timeout S]

* Test names: from --list (one per line, '#' comments, blank lines ignored) or, with --all,
  every smb2.* test from `smbtorture --list` (the trailing duplicate component of one-test
  tcases dropped, which gives the name --fullname reports: smb2.lock.lock.lock -> smb2.lock.lock).
* One smbtorture process per group (group = first two name components), with exactly the
  anchor's options (shared/anchor/README.md): --fullname --format=subunit --target=samba3,
  torture:progress=no, sharedelay=100000, writetimeupdatedelay=500000, user2name/password,
  localdir. smb2.durable-v2-open.persistent* and smb2.replay.* run against //127.0.0.1/ca.
* Watchdog: a test running longer than --test-timeout, or a group longer than
  --group-timeout, kills that smbtorture's process group; the test counts as failure
  (TIMEOUT) and the rest of the group is re-run one test per smbtorture.
* Prints one line per test, then `N passed, N failed` (anything but success is a failure,
  including skip: a listed test must pass). Exit status 1 if any test did not pass.
* --out writes name<TAB>result (success|failure|error|skip), like the anchor's tsv files,
  and OUT.details with seconds and the first line of the reason.
"""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time

MANUAL = re.compile(r'^smb2\.(hold-oplock|hold-sharemode|check-sharemode|set-sparse-ioctl|'
                    r'zero-data-ioctl|durable-open-disconnect|scan)(\.|$)')
CA_RE = re.compile(os.environ.get("CA_REGEX", r'^smb2\.(durable-v2-open\.persistent|replay\.)'))
KW = {"success": "success", "successful": "success", "failure": "failure", "fail": "failure",
      "error": "error", "skip": "skip", "xfail": "failure", "uxsuccess": "success"}
LINE_RE = re.compile(r'^(test|testing|success|successful|failure|fail|error|skip|xfail|uxsuccess):\s(.*)$')

CHILD = [None]


def _term(signum, _frame):
    if CHILD[0] is not None:
        try:
            os.killpg(CHILD[0], signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def listing(smbtorture):
    out = subprocess.run([smbtorture, "--list"], capture_output=True, text=True,
                         timeout=120).stdout
    names = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("smb2."):
            continue
        parts = line.split(".")
        if len(parts) >= 3 and parts[-1] == parts[-2]:
            parts = parts[:-1]
        name = ".".join(parts)
        if name not in names:
            names.append(name)
    return names


def read_list(path):
    names = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and line not in names:
                names.append(line)
    return names


class Runner:
    def __init__(self, a):
        self.a = a
        self.results = {}  # name -> (result, seconds, reason)

    def base_cmd(self, share):
        a = self.a
        cmd = ["stdbuf", "-oL", "-eL", a.smbtorture, "//%s/%s" % (a.host, share),
               "-p", str(a.port), "-U", "%s%%%s" % (a.user, a.password),
               "--fullname", "--format=subunit",
               "--option=torture:progress=no",
               "--option=torture:sharedelay=100000",
               "--option=torture:writetimeupdatedelay=500000",
               "--option=torture:user2name=" + a.user2,
               "--option=torture:user2password=" + a.password2,
               "--option=torture:localdir=" + a.localdir]
        if a.target:
            cmd.append("--target=" + a.target)
        cmd += shlex.split(a.extra_opts)
        return cmd

    def run_unit(self, share, names, tag, per_test_to, total_to):
        """One smbtorture process on names. Returns (finished names, killed test, rc)."""
        cmd = self.base_cmd(share) + names
        logf = os.path.join(self.a.logdir, re.sub(r'[^A-Za-z0-9_.@-]', '_', tag)[:150] + ".log")
        finished, killed = set(), None
        state = {"current": None, "start": None, "pending": None, "detail": []}
        t0 = time.time()
        with open(logf, "w") as lf:
            lf.write("# " + " ".join(shlex.quote(c) for c in cmd) + "\n")
            lf.flush()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, cwd="/tmp")
            CHILD[0] = p.pid
            os.set_blocking(p.stdout.fileno(), False)
            buf = b""

            def handle(line):
                if state["pending"] is not None:
                    if line.strip() == "]":
                        n, r, secs = state["pending"]
                        reason = next((x.strip() for x in state["detail"] if x.strip()), "")
                        self.results[n] = (r, secs, reason[:300])
                        state["pending"], state["detail"] = None, []
                    else:
                        state["detail"].append(line)
                    return
                m = LINE_RE.match(line)
                if not m:
                    return
                kw, rest = m.group(1), m.group(2).rstrip()
                if kw in ("test", "testing"):
                    state["current"], state["start"] = rest, time.time()
                    return
                has_detail = rest.endswith("[") or rest.endswith("[ multipart")
                name = re.sub(r'\s*\[( multipart)?$', '', rest).strip()
                secs = round(time.time() - (state["start"] or time.time()), 1)
                finished.add(name)
                self.results[name] = (KW[kw], secs, "")
                if name == state["current"]:
                    state["current"] = None
                if has_detail:
                    state["pending"], state["detail"] = (name, KW[kw], secs), []

            while True:
                try:
                    chunk = p.stdout.read()
                except BlockingIOError:
                    chunk = None
                if chunk:
                    lf.write(chunk.decode("utf-8", "replace"))
                    lf.flush()
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        handle(line.decode("utf-8", "replace"))
                elif chunk == b"" and p.poll() is not None:
                    break
                now = time.time()
                if p.poll() is None:
                    cur = state["current"]
                    long_test = cur is not None and now - state["start"] > per_test_to
                    long_total = now - t0 > total_to
                    if long_test or long_total:
                        why = ("test timeout %ds" % per_test_to if long_test
                               else "group timeout %ds" % total_to)
                        lf.write("\n# KILLED (%s) while running %s\n" % (why, cur))
                        lf.flush()
                        try:
                            os.killpg(p.pid, signal.SIGTERM)
                            time.sleep(2)
                            os.killpg(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        p.wait()
                        killed = cur
                        if cur is not None:
                            self.results[cur] = ("failure", round(now - state["start"], 1),
                                                 "TIMEOUT (" + why + ")")
                            finished.add(cur)
                        break
                time.sleep(0.05)
            rc = p.wait()
            CHILD[0] = None
            lf.write("\n# rc=%s elapsed=%.1fs\n" % (rc, time.time() - t0))
        cur = state["current"]
        if killed is None and cur is not None and cur not in finished:
            self.results[cur] = ("error", round(time.time() - state["start"], 1),
                                 "no result line (smbtorture rc=%s)" % rc)
            finished.add(cur)
        return finished, killed, rc

    def run(self, tests, known):
        a = self.a
        groups = {}
        for t in tests:
            groups.setdefault(".".join(t.split(".")[:2]), []).append(t)
        for g, names in groups.items():
            todo = []
            for n in names:
                if known is not None and n not in known:
                    self.results[n] = ("error", 0, "not a test name known to `smbtorture --list`")
                elif MANUAL.search(n) and not a.run_manual:
                    self.results[n] = ("skip", 0, "manual tool, not a test (Samba selftest/skip)")
                else:
                    todo.append(n)
            ca = [n for n in todo if CA_RE.search(n)]
            norm = [n for n in todo if n not in ca]
            for share, unit in ((a.share, norm), (a.ca_share, ca)):
                if not unit:
                    continue
                _, killed, rc = self.run_unit(share, unit, g + "@" + share,
                                              a.test_timeout, a.group_timeout)
                left = [n for n in unit if n not in self.results]
                if left:
                    log("  %s: %d tests without result (killed=%s rc=%s); re-running singly"
                        % (g, len(left), killed, rc))
                    for n in left:
                        self.run_unit(share, [n], n + "@" + share, a.test_timeout,
                                      a.test_timeout + 30)
                        if n not in self.results:
                            self.results[n] = ("error", 0, "no result line when run alone")
            for n in names:
                r, secs, why = self.results[n]
                print("%-8s %-60s %6.1fs %s" % (r.upper(), n, secs, why), flush=True)

    def write(self, tests, out):
        with open(out + ".tmp", "w") as f:
            for t in tests:
                f.write("%s\t%s\n" % (t, self.results[t][0]))
        os.replace(out + ".tmp", out)
        with open(out + ".details.tmp", "w") as f:
            for t in tests:
                r, s, why = self.results[t]
                f.write("%s\t%s\t%s\t%s\n" % (t, r, s, why.replace("\t", " ")))
        os.replace(out + ".details.tmp", out + ".details")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--localdir", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", help="file with test names")
    src.add_argument("--all", action="store_true", help="every smb2.* test")
    ap.add_argument("--filter", default="", help="regex on names (with --all)")
    ap.add_argument("--out", help="write name<TAB>result here")
    ap.add_argument("--logdir", default="/tmp/holdfast-torture-logs")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--share", default="share")
    ap.add_argument("--ca-share", default="ca")
    ap.add_argument("--user", default="smbtest")
    ap.add_argument("--password", default="Test123!")
    ap.add_argument("--user2", default="smbtest2")
    ap.add_argument("--password2", default="Test123!")
    ap.add_argument("--target", default=os.environ.get("TORTURE_TARGET", "samba3"))
    ap.add_argument("--extra-opts", default=os.environ.get("EXTRA_OPTS", ""))
    ap.add_argument("--test-timeout", type=float, default=float(os.environ.get("TEST_TIMEOUT", 180)))
    ap.add_argument("--group-timeout", type=float, default=float(os.environ.get("GROUP_TIMEOUT", 2400)))
    ap.add_argument("--run-manual", action="store_true", default=os.environ.get("RUN_MANUAL") == "1")
    ap.add_argument("--smbtorture", default=os.environ.get("SMBTORTURE", "smbtorture"))
    a = ap.parse_args()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    os.makedirs(a.logdir, exist_ok=True)

    known = listing(a.smbtorture)
    if not known:
        print("smbtorture --list printed no smb2.* tests (is samba-testsuite installed?)", file=sys.stderr)
        return 2
    if a.all:
        tests = [t for t in known if not a.filter or re.search(a.filter, t)]
    else:
        tests = read_list(a.list)
    t0 = time.time()
    log("%d tests against 127.0.0.1:%d (logs in %s)" % (len(tests), a.port, a.logdir))
    r = Runner(a)
    r.run(tests, known)
    if a.out:
        r.write(tests, a.out)
    counts = {}
    for t in tests:
        counts[r.results[t][0]] = counts.get(r.results[t][0], 0) + 1
    passed = counts.get("success", 0)
    failed = len(tests) - passed
    log("smbtorture: %d tests in %.0fs: %s" % (len(tests), time.time() - t0,
        " ".join("%s=%d" % kv for kv in sorted(counts.items())) or "none"))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
