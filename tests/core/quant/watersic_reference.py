#!/usr/bin/env python3
"""Regenerates the golden values of test_watersic.cpp's "matches the numpy reference" test.

numpy only. The data is f2_data() of test_watersic.cpp, rebuilt bit for bit: mt19937_64 (seed 2)
standard normals by Box-Muller exactly as the test's `Normal` draws them, channel energies
exp(normal), K in float64, Q rounded to float32. The algorithm is zsic() + search() of the §8 F2
example in docs ALGORITHMS_examples.py (copied below unchanged: ModelOpt's options, damping
1e-4 of the mean diagonal, LMMSE gains, columns sorted by query energy, 30 bisection steps on
log c in [1e-6, 1e3] over all rows, rate = H(Z) + 16/a + 16/n).

    python3 tests/core/quant/watersic_reference.py

prints one line per target rate: target, c, rate, entropy, output NMSE, sum and sum of |codes|,
in the order of the test's Golden{...} rows.
"""
import math

import numpy as np

MASK64 = (1 << 64) - 1


class MT19937_64:
    """std::mt19937_64 (the C++ standard's parameters and seeding)."""

    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK64
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK64
        self.index = 312

    def _twist(self):
        mt = self.mt
        for i in range(312):
            x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % 312] & 0x7FFFFFFF)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + 156) % 312] ^ xa
        self.index = 0

    def __call__(self):
        if self.index >= 312:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK64


class Normal:
    """The test's Box-Muller: u1 in (0, 1], u2 in [0, 1), cos first, sin as the spare."""

    def __init__(self, seed):
        self.rng = MT19937_64(seed)
        self.spare = None

    def __call__(self):
        if self.spare is not None:
            s, self.spare = self.spare, None
            return s
        u1 = ((self.rng() >> 11) + 1.0) * 2.0**-53
        u2 = (self.rng() >> 11) * 2.0**-53
        r = math.sqrt(-2.0 * math.log(u1))
        self.spare = r * math.sin(2 * math.pi * u2)
        return r * math.cos(2 * math.pi * u2)


def f2_data():
    a, n, tq = 2048, 64, 1024
    g = Normal(2)
    chan = [math.exp(g()) for _ in range(n)]
    k = np.array([[g() * chan[j] for j in range(n)] for _ in range(a)], dtype=np.float64)
    qchan = [math.exp(g()) for _ in range(n)]
    q = np.array([[g() * qchan[j] for j in range(n)] for _ in range(tq)], dtype=np.float64).astype(np.float32)
    return k, q.astype(np.float64)


# ---- ALGORITHMS_examples.py, §8 F2 (unchanged) ----
def entropy_bits(Z):
    _, cnt = np.unique(Z, return_counts=True)
    p = cnt / cnt.sum()
    return float(-(p * np.log2(p)).sum())


def zsic(W, A, c, damp_pct=1e-4, lmmse=True, sort_cols=True):
    a, n = W.shape
    perm = np.argsort((A * A).sum(1), kind="stable") if sort_cols else np.arange(n)
    Wp, Ap = W[:, perm], A[perm]
    S = Ap @ Ap.T
    H = S + damp_pct * np.mean(np.diag(S)) * np.eye(n)
    L = np.linalg.cholesky(H)
    Y = Wp @ np.linalg.solve(L, S).T  # W S L^-T
    alpha = c / np.diag(L)
    Z = np.zeros((a, n), dtype=np.int64)
    gam = np.ones(n)
    for i in range(n - 1, -1, -1):
        d = alpha[i] * L[i, i]  # == c
        zi = np.rint(Y[:, i] / d)
        Z[:, i] = zi.astype(np.int64)
        zz = zi @ zi
        if lmmse and zz > 1e-20:
            gam[i] = (zi @ Y[:, i]) / (d * zz)
        Y -= np.outer(gam[i] * alpha[i] * zi, L[i])
    rate = entropy_bits(Z) + 16.0 / a + 16.0 / n
    What_p = Z * (alpha * gam)[None, :]
    inv = np.argsort(perm)
    What = What_p[:, inv]
    nmse = np.sum(((W - What) @ A) ** 2) / np.sum((W @ A) ** 2)
    return dict(perm=perm, L=L, alpha=alpha[inv], gamma=gam[inv], Z=Z[:, inv], What=What, rate=rate,
                H=entropy_bits(Z), nmse=nmse)


def search(W, A, target, iters=30, lo=1e-6, hi=1e3):
    llo, lhi = np.log(lo), np.log(hi)
    for _ in range(iters):
        mid = 0.5 * (llo + lhi)
        if zsic(W, A, np.exp(mid))["rate"] > target:
            llo = mid
        else:
            lhi = mid
    return float(np.exp(0.5 * (llo + lhi)))
# ---- end of the copy ----


def main():
    k, q = f2_data()
    A = q.T
    for target in (2.0, 4.0):
        c = search(k, A, target)
        r = zsic(k, A, c)
        Z = r["Z"]
        print(f"target={target} c={c:.8g} rate={r['rate']:.7g} entropy={r['H']:.7g} nmse={r['nmse']:.6g} "
              f"sum={int(Z.sum())} sum_abs={int(np.abs(Z).sum())}")


if __name__ == "__main__":
    main()
