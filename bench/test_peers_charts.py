"""Checks bench/peers_charts.py on a hand-made ROWS_OUT file:  python3 -m unittest bench/test_peers_charts.py"""

import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import peers_charts  # noqa: E402

ROWS = """accounts\tcontender\trun\tcalls\twritten\tseconds\trss_mib
10\tusagesync\tfirst run\t13\t9\t4.0\t100
10\tusagesync\tno change\t0\t0\t1.5\t100
10\tusagesync\tno change\t0\t0\t1.75\t100
10\tnaive\tfirst run\t5463\t5\t9.0\t60
100\tusagesync\tfirst run\t13\t90\t40.0\t300
"""
SVG = "{http://www.w3.org/2000/svg}"


class Charts(unittest.TestCase):
    def draw(self, metric):
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
            f.write(ROWS)
        try:
            return ET.fromstring(peers_charts.chart(peers_charts.read_rows(f.name), metric, "t"))
        finally:
            os.unlink(f.name)

    def titles(self, svg):
        return [t.text for t in svg.iter(SVG + "title")]

    def test_one_bar_per_measured_run_and_the_later_row_wins(self):
        svg = self.draw("seconds")
        self.assertEqual(len(self.titles(svg)), 4)
        self.assertIn("usagesync, no change: 1.8", self.titles(svg))

    def test_zero_calls_is_an_empty_bar_labelled_zero(self):
        svg = self.draw("calls")
        bars = {r.find(SVG + "title").text: float(r.get("width")) for r in svg.iter(SVG + "rect") if r.find(SVG + "title") is not None}
        self.assertEqual(bars["usagesync, no change: 0"], 0.0)
        self.assertGreater(bars["one update per account, first run: 5,463"], bars["usagesync, first run: 13"])

    def test_a_contender_not_run_at_a_size_is_said_so(self):
        texts = [t.text for t in self.draw("calls").iter(SVG + "text")]
        self.assertEqual(texts.count("not run at this size"), 1)


if __name__ == "__main__":
    unittest.main()
