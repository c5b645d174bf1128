"""The branch-free requantization of the engine (tg_requantize.h) equals TFLM's two-step
form written out as TFLM writes it (SaturatingRoundingDoublingHighMul with its nudge
and truncating division, then RoundingDivideByPOT with mask and threshold), which
stays in the header as tg_srdhm / tg_rdbpot.

Compared at tolerance 0 in a small host C program: tg_srdhm_nonneg vs tg_srdhm and
tg_rdbpot_pos vs tg_rdbpot on every value in windows around 0, ±2^30 and the int32
limits (where the rounding ties and the overflow guards are), and tg_requantize vs
the two-step form on 3 million random (acc, multiplier, shift) triples drawn over
the documented ranges (multiplier 0 or [2^30, 2^31 - 1], shift [-31, 30]), with acc
of every magnitude. A C program: the same arithmetic in numpy int64 would not test
the compiler's int64 shifts.

The one-rounding-step form of the element-wise kernels, tg_rq_apply(2 v, mult,
tg_rq_add(shift, zp), -shift) = tg_rdbpot_pos(tg_srdhm_nonneg(v, mult), -shift) + zp, is
compared exhaustively on every v with |v| <= 2^17 (every product of two offset int8
values, and every (x + offset) 2^20 of an ADD input is a multiple of 2^20 below 2^28,
covered by the second range) for every shift it accepts ([-22, -1]), zero points -128,
0, 127 and six multipliers (0, 2^30, 2^30 + 1, two inner values, 2^31 - 1); then on 3
million random (v, mult, shift, zp) with |v| < 2^29 (|2 S| of an ADD output stays
below 2^29).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime.cbuild import CC
from firmware_export.cbuild import ENGINE_DIR

PROGRAM = r"""
#include <stdio.h>
#include "tg_requantize.h"

static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (uint32_t)s;
}

static int32_t two_step(int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return tg_rdbpot(tg_srdhm(tg_shl_wrap(acc, left), mult), right);
}

int main(void)
{
    long bad_mul = 0, bad_pot = 0, bad_req = 0, n_mul = 0, n_pot = 0, n_req = 0;
    const int64_t centres[] = { 0, 1 << 30, -(1 << 30), INT32_MIN, INT32_MAX };
    const int32_t mults[] = { 0, 1 << 30, (1 << 30) + 1, 3 << 29, INT32_MAX };
    for (int c = 0; c < 5; ++c) {
        for (int64_t d = -20000; d <= 20000; ++d) {
            const int64_t v = centres[c] + d;
            if (v < INT32_MIN || v > INT32_MAX) {
                continue;
            }
            const int32_t x = (int32_t)v;
            for (int m = 0; m < 5; ++m) {
                n_mul++;
                bad_mul += tg_srdhm(x, mults[m]) != tg_srdhm_nonneg(x, mults[m]);
            }
            if (x != INT32_MIN) {
                for (int32_t e = 1; e <= 31; ++e) {
                    n_pot++;
                    bad_pot += tg_rdbpot(x, e) != tg_rdbpot_pos(x, e);
                }
            }
        }
    }
    for (long i = 0; i < 3000000; ++i) {
        int32_t acc = (int32_t)rnd();
        acc >>= rnd() % 32;
        int32_t mult = (int32_t)((1u << 30) | (rnd() & 0x3fffffffu));
        if (i % 101 == 0) {
            mult = 0;
        } else if (i % 103 == 0) {
            mult = INT32_MAX;
        }
        const int32_t shift = (int32_t)(rnd() % 62u) - 31;
        n_req++;
        bad_req += two_step(acc, mult, shift) != tg_requantize(acc, mult, shift);
    }
    long n_rq = 0, bad_rq = 0;
    const int32_t rq_mults[] = { 0, 1 << 30, (1 << 30) + 1, 1100124254, 1993081599, INT32_MAX };
    const int32_t zps[] = { -128, 0, 127 };
    for (int32_t shift = -22; shift <= -1; ++shift) {
        for (int z = 0; z < 3; ++z) {
            const int32_t add = tg_rq_add(shift, zps[z]);
            for (int m = 0; m < 6; ++m) {
                for (int32_t v = -(1 << 17); v <= (1 << 17); ++v) {
                    n_rq++;
                    bad_rq += tg_rq_apply(2 * v, rq_mults[m], add, -shift) !=
                              tg_rdbpot_pos(tg_srdhm_nonneg(v, rq_mults[m]), -shift) + zps[z];
                }
            }
        }
    }
    for (long i = 0; i < 3000000; ++i) {
        const int32_t v = (int32_t)(rnd() % (1u << 30)) - (1 << 29);
        const int32_t mult = (int32_t)((1u << 30) | (rnd() & 0x3fffffffu));
        const int32_t shift = -1 - (int32_t)(rnd() % 22u);
        const int32_t zp = (int32_t)(rnd() % 256u) - 128;
        n_rq++;
        bad_rq += tg_rq_apply(2 * v, mult, tg_rq_add(shift, zp), -shift) !=
                  tg_rdbpot_pos(tg_srdhm_nonneg(v, mult), -shift) + zp;
    }
    printf("%ld %ld %ld %ld %ld %ld %ld %ld\n", n_mul, bad_mul, n_pot, bad_pot, n_req, bad_req,
           n_rq, bad_rq);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not found")
def test_branch_free_requantize_equals_the_two_step_form(tmp_path: Path) -> None:
    src = tmp_path / "rq.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "rq"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{ENGINE_DIR}",
                    str(src), "-o", str(exe)], check=True, capture_output=True, text=True)  # fmt: skip
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    n_mul, bad_mul, n_pot, bad_pot, n_req, bad_req, n_rq, bad_rq = (int(v) for v in out.split())
    # 5 windows of 40,001 values, less the 40,000 past the int32 limits; 5 multipliers;
    # 31 exponents for every value but INT32_MIN
    assert (n_mul, n_pot, n_req) == (160_005 * 5, 160_004 * 31, 3_000_000)
    assert (bad_mul, bad_pot, bad_req) == (0, 0, 0)
    # 22 shifts x 3 zero points x 6 multipliers x (2^18 + 1) values, then the random ones
    assert n_rq == 22 * 3 * 6 * ((1 << 18) + 1) + 3_000_000
    assert bad_rq == 0
