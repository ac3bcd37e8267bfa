"""The kernel report's reading of SASS and its cold regions (scripts/kernel_report_*.py), on a
listing written here: nvdisasm -gi's inlining chains, the blocks a region makes cold, and the
markers' errors. Run by CTest (kernel_report_logic) with the standard library alone."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))

from kernel_report_compile import ReportError  # noqa: E402
from kernel_report_loops import find_loops  # noqa: E402
from kernel_report_manifest import cold_regions  # noqa: E402
from kernel_report_sass import parse_sass  # noqa: E402

# A loop of four blocks: the hot head; a block of region code (its callee inlined from elsewhere,
# named by the chain) ending in a branch; a block two thirds of one line, a third of another; the
# loop's end, with an instruction under a predicate.
LISTING = """
kernel:
.L_x_0:
\t//## File "/src/k.cu", line 10
        /*0000*/                   FADD R1, R2, R3 ;
        /*0010*/              @P0 BRA `(.L_x_2) ;
\t//## File "/src/math.h", line 5 inlined at "/src/k.cu", line 21
\t//## File "/src/k.cu", line 21
        /*0020*/                   MUFU.EX2 R4, R1 ;
\t//## File "/src/k.cu", line 22
        /*0030*/                   FMUL R4, R4, R4 ;
        /*0040*/                   BRA `(.L_x_3) ;
.L_x_2:
\t//## File "/src/k.cu", line 22
        /*0050*/                   FADD R5, R4, R1 ;
        /*0060*/                   FADD R5, R5, R1 ;
\t//## File "/src/k.cu", line 30
        /*0070*/                   FADD R6, R5, R1 ;
.L_x_3:
\t//## File "/src/k.cu", line 31
        /*0080*/              @P1 FADD R7, R6, R6 ;
        /*0090*/                   ISETP.NE.AND P0, PT, R6, RZ, PT ;
\t//## File "/src/k.cu", line 40
        /*00a0*/              @P0 BRA `(.L_x_0) ;
"""


class ColdBlocks(unittest.TestCase):
    def loop(self):
        insns, labels = parse_sass(LISTING)["kernel"]
        (loop,) = find_loops(insns, labels)
        return loop

    def cold(self, first, last):
        return [b[0].addr for b in self.loop().cold_blocks({"r": ("k.cu", first, last)})]

    def test_the_chain_of_an_inlined_instruction(self):
        ex2 = next(i for i in self.loop().insns if i.op == "MUFU.EX2")
        self.assertEqual(ex2.line, "math.h:5")
        self.assertEqual(ex2.frames, ("math.h:5", "k.cu:21", "k.cu:21"))

    def test_a_block_at_least_half_of_the_region_is_cold(self):
        self.assertEqual(self.cold(20, 22), ["0x0020", "0x0050"])
        self.assertEqual(self.cold(22, 22), ["0x0020", "0x0050"])

    def test_a_block_mostly_of_other_code_stays(self):
        self.assertEqual(self.cold(21, 21), [])
        self.assertEqual(self.cold(30, 30), [])

    def test_region_code_under_a_predicate_beside_other_code_stays(self):
        self.assertEqual(self.cold(31, 31), [])
        self.assertEqual(self.cold(31, 40), ["0x0080"])  # the whole block: its own predicate

    def test_no_region_no_cold_block(self):
        self.assertEqual(self.loop().cold_blocks({}), [])


class Markers(unittest.TestCase):
    def regions(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".cu", delete=False) as f:
            f.write(text)
        try:
            return cold_regions([f.name]), os.path.basename(f.name)
        finally:
            os.unlink(f.name)

    def test_the_lines_between_the_markers(self):
        regions, name = self.regions("a\n  // cold: one\nb\nc\n  // cold end\nd\n")
        self.assertEqual(regions, {"one": (name, 3, 4)})

    def test_unbalanced_or_repeated_markers_are_errors(self):
        for text in ("// cold: one\n", "// cold end\n", "// cold: a\n// cold: b\n// cold end\n",
                     "// cold: a\n// cold end\n// cold: a\n// cold end\n"):
            with self.assertRaises(ReportError, msg=text):
                self.regions(text)


if __name__ == "__main__":
    unittest.main()
