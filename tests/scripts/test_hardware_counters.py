"""bench/hardware_counters.py's reading of ncu's CSV, its figures and its table, with a stand-in
for ncu written here (the real one needs a GPU), and its rows against docs/kernel-report.md and
against the benchmark binary's ($FUSEDLOSS_BENCH). Run by CTest (hardware_counters_logic) with the
standard library alone."""
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))

import hardware_counters as prof  # noqa: E402

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"')


def details(kernel, values, launch="0"):
    rows = [f'"{launch}","7","fusedloss_bench","h","{kernel}","1","13","(768, 1, 1)",'
            f'"(132, 1, 1)","0","9.0","Command line profiler metrics","{m}","",'
            f'"{v}"' for m, v in values.items()]
    return "\n".join(rows)


# What a 2^28-element BCE launch would report: 23.5 thread instructions, 6.01 DRAM bytes and 0.19
# shared wavefronts an element, over 400 us.
N = 1 << 28
VALUES = {
    "smsp__thread_inst_executed.sum": f"{23.5 * N:,.0f}",
    "dram__bytes_read.sum": str(4 * N + N // 100),
    "dram__bytes_write.sum": str(2 * N),
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": str(N * 19 // 100),
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": str(N // 50),
    "sm__warps_active.avg.pct_of_peak_sustained_active": "36.9",
    "gpu__time_duration.sum": "400000",
}

# A stand-in for ncu: profiling writes the --export report, --import prints the details page of
# $FAKE_CSV; with $FAKE_DENIED set it fails as a container without counter access does; profiling
# takes $FAKE_SECONDS.
FAKE_NCU = """#!/usr/bin/env python3
import os, sys, time
if os.environ.get("FAKE_DENIED"):
    print("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access counters")
    sys.exit(1)
if "--import" in sys.argv:
    print("==PROF== Disconnected")
    print(open(os.environ["FAKE_CSV"]).read())
    sys.exit(0)
time.sleep(float(os.environ.get("FAKE_SECONDS", "0")))
out = sys.argv[sys.argv.index("--export") + 1]
open(out + ".ncu-rep", "w").close()
"""


class ParseAndFigures(unittest.TestCase):
    def test_details_first_launch_and_noise(self):
        text = "\n".join(["==PROF== Connected to process 7", HEADER,
                          details("element_lookup_kernel", VALUES),
                          details("element_lookup_kernel", {"gpu__time_duration.sum": "1"}, "1")])
        got = prof.parse_details(text)
        self.assertEqual(list(got), ["element_lookup_kernel"])
        self.assertEqual(got["element_lookup_kernel"]["gpu__time_duration.sum"], 400000.0)
        self.assertEqual(got["element_lookup_kernel"]["smsp__thread_inst_executed.sum"],
                         round(23.5 * N))
        self.assertEqual(prof.parse_details("no table here"), {})

    def test_figures(self):
        metrics = prof.parse_details(HEADER + "\n" + details("k", VALUES))["k"]
        f = prof.figures(metrics, N, 6, 23.1)
        self.assertAlmostEqual(f["instructions_per_element"], 23.5, places=6)
        self.assertAlmostEqual(f["dram_bytes_per_element"], 6.01, places=2)
        self.assertAlmostEqual(f["shared_wavefronts_per_element"], 0.19, places=2)
        self.assertAlmostEqual(f["bank_conflicts_per_element"], 0.02, places=2)
        self.assertAlmostEqual(f["tb_per_s"], (6 * N + N // 100) / 400e-6 / 1e12, places=6)
        self.assertEqual(f["static_per_element"], 23.1)
        del metrics["gpu__time_duration.sum"]
        with self.assertRaisesRegex(ValueError, "gpu__time_duration"):
            prof.figures(metrics, N, 6, None)

    @unittest.skipUnless(os.environ.get("FUSEDLOSS_BENCH"), "FUSEDLOSS_BENCH names no benchmark")
    def test_every_row_is_a_benchmark_row(self):
        listed = subprocess.run([os.environ["FUSEDLOSS_BENCH"], "--benchmark_list_tests"],
                                capture_output=True, text=True, check=True,
                                env=dict(os.environ, FUSEDLOSS_BENCH_DEVICE="cpu")).stdout
        for row in prof.ROWS:
            self.assertRegex(listed, r"(?m)^" + re.escape(row[0]) + r"(/|$)", row[0])

    def test_every_row_has_a_static_count(self):
        with open(os.path.join(ROOT, "docs", "kernel-report.md"), encoding="utf-8") as f:
            counts = prof.static_counts(f.read())
        for row in prof.ROWS:
            self.assertIsNotNone(prof.static_count(counts, row[2]), row[2])


class WithAStandInForNcu(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.ncu = os.path.join(self.dir, "ncu")
        with open(self.ncu, "w") as f:
            f.write(FAKE_NCU)
        os.chmod(self.ncu, os.stat(self.ncu).st_mode | stat.S_IEXEC)
        self.csv = os.path.join(self.dir, "page.csv")
        with open(self.csv, "w") as f:
            f.write(HEADER + "\n" + details("element_lookup_kernel", VALUES))

    def read_out(self):
        out = os.path.join(self.dir, "out")
        with open(os.path.join(out, "counters.json"), encoding="utf-8") as f:
            data = json.load(f)
        with open(os.path.join(out, "counters.md"), encoding="utf-8") as f:
            return data, f.read()

    def run_script(self, **env):
        out = os.path.join(self.dir, "out")
        script = os.path.join(ROOT, "bench", "hardware_counters.py")
        r = subprocess.run([sys.executable, script, "--bench", "/bin/true", "--out", out,
                            "--ncu", self.ncu],
                           capture_output=True, text=True,
                           env=dict(os.environ, FAKE_CSV=self.csv, **env))
        return (r.returncode, *self.read_out())

    def test_every_row_profiled(self):
        rc, data, md = self.run_script()
        self.assertEqual(rc, 0, md)
        self.assertEqual(len(data["rows"]), len(prof.ROWS))
        first = data["rows"][0]["figures"]
        self.assertAlmostEqual(first["instructions_per_element"], 23.5, places=6)
        self.assertIn("| 23.5 (", md)

    def test_no_counters_is_said_not_failed(self):
        rc, data, md = self.run_script(FAKE_DENIED="1")
        self.assertEqual(rc, 0)
        self.assertEqual(data["rows"], [])
        self.assertIn("No counters", md)
        self.assertIn("ERR_NVGPUCTRPERM", md)

    def test_unreadable_report_fails(self):
        with open(self.csv, "w") as f:
            f.write(HEADER + "\n" + details("element_lookup_kernel", {"dram__bytes_read.sum": "1"}))
        rc, data, md = self.run_script()
        self.assertEqual(rc, 1)
        self.assertIn("ncu reported no", data["rows"][0]["error"])

    def test_a_row_over_the_time_left_ends_the_run(self):
        # Rows of 2 s in 3 s for all: the first row is profiled, the second gets the 1 s left.
        argv = ["hardware_counters.py", "--bench", "/bin/true",
                "--out", os.path.join(self.dir, "out"), "--ncu", self.ncu]
        with mock.patch.object(prof, "TOTAL_S", 3), mock.patch.object(sys, "argv", argv), \
                mock.patch.dict(os.environ, FAKE_CSV=self.csv, FAKE_SECONDS="2"):
            rc = prof.main()
        data, md = self.read_out()
        self.assertEqual(rc, 1)
        self.assertEqual(len(data["rows"]), 2, md)
        self.assertIn("figures", data["rows"][0])
        self.assertIn("the rows after it not run", data["rows"][1]["error"])


if __name__ == "__main__":
    unittest.main()
