#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Totals of a meson test run, from its testlog.json.

Reads one JSON object per line (meson-logs/testlog.json) and prints a short
per-test table, then, alone on the last line, `N passed, N failed`.

Criterion suites run with --tap=-, so their stdout is TAP: every `ok` line
counts as passed (skips are listed but not counted), every `not ok` as
failed. A TAP suite that died before printing all the tests it announced
(`1..N`) counts the missing ones as failed. A test without TAP output
counts as one test, passed or failed by meson's verdict.

usage: summarize.py [--extra-failed N] [BUILD_DIR | path/to/testlog.json] ...
  --extra-failed N   add N failures (e.g. builds that failed and ran no test)
  Several logs are added up; a log that cannot be read counts as 1 failure.
"""
import argparse
import json
import os
import re
import sys

TAP_LINE = re.compile(r'^(not ok|ok)\b(.*)$')
TAP_PLAN = re.compile(r'^1\.\.(\d+)')
PASS_RESULTS = {'OK', 'EXPECTEDFAIL'}
SKIP_RESULTS = {'SKIP'}


def log_path(arg):
    if arg is None:
        arg = 'build'
    if os.path.isdir(arg):
        return os.path.join(arg, 'meson-logs', 'testlog.json')
    return arg


def tap_counts(text):
    """(passed, failed, skipped, planned, seen) or None when not TAP."""
    passed = failed = skipped = seen = 0
    planned = None
    is_tap = False
    for line in text.splitlines():
        m = TAP_PLAN.match(line)
        if m:
            planned = int(m.group(1))
            is_tap = True
            continue
        m = TAP_LINE.match(line)
        if not m:
            continue
        is_tap = True
        seen += 1
        directive = m.group(2).upper()
        if m.group(1) == 'not ok':
            if '# TODO' in directive:
                passed += 1
            else:
                failed += 1
        elif '# SKIP' in directive:
            skipped += 1
        else:
            passed += 1
    if not is_tap:
        return None
    return passed, failed, skipped, planned, seen


def count(entry):
    """(passed, failed, skipped) of one meson test."""
    result = entry.get('result', '')
    text = (entry.get('stdout') or '') + '\n' + (entry.get('stderr') or '')
    tap = tap_counts(text)
    if tap is None:
        if result in SKIP_RESULTS:
            return 0, 0, 1
        return (1, 0, 0) if result in PASS_RESULTS else (0, 1, 0)
    passed, failed, skipped, planned, seen = tap
    if planned is not None and seen < planned:
        failed += planned - seen      # crashed or timed out mid-suite
    if result not in PASS_RESULTS | SKIP_RESULTS and failed == 0:
        failed = 1                    # meson saw a failure TAP did not name
    return passed, failed, skipped


def read_log(path):
    """(passed, failed, skipped) of one testlog.json, printing its table."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = f.readlines()
    except OSError as e:
        print(f'summarize: cannot read {path}: {e.strerror}; run `meson test -C BUILD` first')
        return 0, 1, 0
    total_p = total_f = total_s = 0
    print(f'--- {path}')
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        p, f, s = count(entry)
        total_p += p
        total_f += f
        total_s += s
        print(f"{entry.get('name', '?'):<44} {entry.get('result', '?'):<8} "
              f"{p:>5} passed {f:>4} failed {s:>4} skipped")
    return total_p, total_f, total_s


def main(argv):
    ap = argparse.ArgumentParser(description='N passed, N failed from meson testlog.json files')
    ap.add_argument('--extra-failed', type=int, default=0,
                    help='failures to add (builds that failed before any test ran)')
    ap.add_argument('logs', nargs='*', help='build dirs or testlog.json files (default: build)')
    args = ap.parse_args(argv[1:])
    paths = [log_path(a) for a in args.logs] or [log_path(None)]
    total_p, total_f = 0, max(0, args.extra_failed)
    for path in paths:
        p, f, _ = read_log(path)
        total_p += p
        total_f += f
    print(f'{total_p} passed, {total_f} failed')
    return 0 if total_f == 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
