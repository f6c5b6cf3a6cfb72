"""Compiled loops behind ``engine.lens_stats``: one pass per statistic over a vocabulary row.

NumPy needs ~10 passes per row and its float32 ``exp``/``log`` run at ~2.5-3 ns per element on a
plain AVX2 machine. These loops fuse the passes, with branch-free ``exp``/``log`` (range reduction
on the exponent bits plus a polynomial, relative error ~1e-7, like the float32 libm) so LLVM
vectorises them for the host CPU. Sums are accumulated in float64 (per 256-element chunk in
float32 where every term is >= 0).

They are written as LLVM IR with llvmlite (numba's code generator, installed with umap-learn's
numba anyway) and compiled for the host CPU once per process in ~0.2 s, in the background while
the model loads (``prepare``). numba itself would add ~1 s before the first lens of every
``lazarus --batch`` run (its typing registries import SciPy). Called through ctypes, which releases
the GIL, so two threads can share the rows.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import Callable, Sequence

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

F32 = ir.FloatType()
F64 = ir.DoubleType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PF32 = F32.as_pointer()
PF64 = F64.as_pointer()
PI64 = I64.as_pointer()
# Reassociation lets LLVM vectorise the reductions: allowed on the accumulating adds only (it would
# undo the two-constant ln 2 split of exp). No nnan/ninf anywhere, so -inf logits stay safe.
FM = ("reassoc", "contract", "nsz")
EXACT = ("contract",)  # fused multiply-add allowed

EXP_FLOOR = -87.0  # exp below this is under float32's normal range: counted as 0
CHUNK = 256  # terms summed in float32 within a chunk (8 lanes), the chunks in float64
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2)
# Cephes logf: log(1+x) = x - x^2/2 + x^3 P(x) for x in [sqrt(1/2)-1, sqrt(2)-1]
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
          -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
# e^r = sum r^n / n!, |r| <= ln2/2: degree 7, 1e-7 relative
_EXP_P = tuple(1.0 / math.factorial(n) for n in range(7, -1, -1))
# g(d) = (1+d) log(1+d) + (1-d) log(1-d) = sum_n d^(2n) / (n (2n-1)), in u = d^2; 10 terms for u <= 1/4
_G = tuple(1.0 / (n * (2 * n - 1)) for n in range(10, 0, -1))
# psi(t) = t - 1 + e^-t = sum_{n>=2} (-t)^n / n!, divided by t^2; 9 terms for |t| <= 1/2
_PSI = tuple((-1) ** n / math.factorial(n) for n in range(10, 1, -1))


class _Fn:
    """Build one function: ``b`` is its IR builder, ``args`` its parameters."""

    def __init__(self, module: ir.Module, name: str, ret: ir.Type, params: Sequence[ir.Type]) -> None:
        self.fn = ir.Function(module, ir.FunctionType(ret, params), name=name)
        for a in self.fn.args:
            if isinstance(a.type, ir.PointerType):
                a.add_attribute("noalias")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.args = self.fn.args

    # -- arithmetic -----------------------------------------------------------------------
    def f(self, v: float) -> ir.Constant:
        return ir.Constant(F32, float(np.float32(v)))

    def add(self, a, c):
        return self.b.fadd(a, c, flags=EXACT)

    def acc(self, total, term):
        """A reduction step: may be reordered (vectorised)."""
        return self.b.fadd(total, term, flags=FM)

    def sub(self, a, c):
        return self.b.fsub(a, c, flags=EXACT)

    def mul(self, a, c):
        return self.b.fmul(a, c, flags=EXACT)

    def div(self, a, c):
        return self.b.fdiv(a, c, flags=("contract", "arcp"))

    def select(self, cond, a, c):
        return self.b.select(cond, a, c)

    def gt(self, a, c):
        return self.b.fcmp_ordered(">", a, c)

    def horner(self, x, coeffs: Sequence[float]):
        p = self.f(coeffs[0])
        for c in coeffs[1:]:
            p = self.add(self.mul(p, x), self.f(c))
        return p

    def load(self, ptr, i):
        return self.b.load(self.b.gep(ptr, [i]))

    # -- float32 exp / log -------------------------------------------------------------------
    def exp_neg(self, s):
        """exp(s) for s in [-87, 0]: s = n ln2 + r, e^r by its Taylor polynomial, 2^n from the bits."""
        b = self.b
        t = self.sub(self.mul(s, self.f(1.4426950408889634)), self.f(0.5))
        n_i = b.fptosi(t, I32)  # truncation rounds up for t <= 0: n = round(s log2 e)
        n = b.sitofp(n_i, F32)
        r = self.sub(self.sub(s, self.mul(n, self.f(0.693359375))), self.mul(n, self.f(-2.12194440e-4)))
        pow2 = b.bitcast(b.shl(b.add(n_i, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
        return self.mul(self.horner(r, _EXP_P), pow2)

    def log_pos(self, m):
        """log(m) for positive normal m: m = 2^k f, f in [sqrt(1/2), sqrt(2)), log f by Cephes."""
        b = self.b
        ix = b.sub(b.bitcast(m, I32), ir.Constant(I32, _SQRT_HALF_BITS))
        k = b.sitofp(b.ashr(ix, ir.Constant(I32, 23)), F32)
        fbits = b.add(b.and_(ix, ir.Constant(I32, 0x7FFFFF)), ir.Constant(I32, _SQRT_HALF_BITS))
        x = self.sub(b.bitcast(fbits, F32), self.f(1.0))
        z = self.mul(x, x)
        y = self.mul(self.mul(self.horner(x, _LOG_P), x), z)
        y = self.sub(self.add(y, self.mul(k, self.f(-2.12194440e-4))), self.mul(self.f(0.5), z))
        return self.add(self.add(x, y), self.mul(k, self.f(0.693359375)))

    def js_g(self, d):
        """g(d) = (1+d) log(1+d) + (1-d) log(1-d) for d in [-1, 1]: the series near 0 (no
        cancellation), the logs beyond |d| = 1/2."""
        one = self.f(1.0)
        u = self.mul(d, d)
        hi = self.add(one, d)
        lo = self.sub(one, d)  # exact for |d| >= 1/2
        lo_safe = self.select(self.gt(lo, self.f(1e-38)), lo, self.f(1e-38))
        by_logs = self.add(self.mul(hi, self.log_pos(hi)), self.mul(lo, self.log_pos(lo_safe)))
        return self.select(self.b.fcmp_ordered("<=", u, self.f(0.25)), self.mul(self.horner(u, _G), u), by_logs)

    # -- loops ----------------------------------------------------------------------------------
    def loop(self, start, stop, carried: list, body: Callable) -> list:
        """for i in range(start, stop) (stop > start) with loop-carried values; returns their last values."""
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block("loop")
        done = self.fn.append_basic_block("done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(start, pre)
        phis = []
        for v in carried:
            p = b.phi(v.type)
            p.add_incoming(v, pre)
            phis.append(p)
        new = body(i, phis)
        nxt = b.add(i, ir.Constant(I64, 1))
        end = b.block
        i.add_incoming(nxt, end)
        for p, v in zip(phis, new):
            p.add_incoming(v, end)
        b.cbranch(b.icmp_signed("<", nxt, stop), head, done)
        b.position_at_end(done)
        return new


def _row_max(m: ir.Module) -> None:
    fn = _Fn(m, "row_max", F32, [PF32, I64])
    x, n = fn.args
    first = fn.load(x, ir.Constant(I64, 0))

    def body(i, c):
        v = fn.load(x, i)
        return [fn.select(fn.gt(v, c[0]), v, c[0])]

    fn.b.ret(fn.loop(ir.Constant(I64, 0), n, [first], body)[0])


def _count_above(m: ir.Module) -> None:
    fn = _Fn(m, "count_above", I64, [PF32, I64, F32])
    x, n, t = fn.args

    def body(i, c):
        return [fn.b.add(c[0], fn.b.zext(fn.gt(fn.load(x, i), t), I64))]

    fn.b.ret(fn.loop(ir.Constant(I64, 0), n, [ir.Constant(I64, 0)], body)[0])


def _top_k(m: ir.Module) -> None:
    """ids[:k] = the k largest entries of x, largest first, ties by the lower id (k >= 1); vals is
    scratch. One scalar pass: an entry is inserted only when it beats the current k-th value. Entries
    that are not > -inf are never taken (ids stay -1 when fewer than k qualify)."""
    fn = _Fn(m, "top_k", ir.VoidType(), [PF32, I64, I64, PI64, PF32])
    x, n, k, ids, vals = fn.args
    b = fn.b
    zero = ir.Constant(I64, 0)
    one = ir.Constant(I64, 1)
    minus_inf = ir.Constant(F32, float("-inf"))

    def init(i, c):
        b.store(minus_inf, b.gep(vals, [i]))
        b.store(ir.Constant(I64, -1), b.gep(ids, [i]))
        return []

    fn.loop(zero, k, [], init)
    last = b.sub(k, one)

    def body(i, c):
        thr = c[0]
        v = fn.load(x, i)
        entry = b.block
        insert = fn.fn.append_basic_block("insert")
        shift = fn.fn.append_basic_block("shift")
        check = fn.fn.append_basic_block("check")
        move = fn.fn.append_basic_block("move")
        place = fn.fn.append_basic_block("place")
        cont = fn.fn.append_basic_block("cont")
        b.cbranch(fn.gt(v, thr), insert, cont)
        b.position_at_end(insert)
        b.branch(shift)
        b.position_at_end(shift)  # j from k-1 down while vals[j-1] < v
        j = b.phi(I64)
        j.add_incoming(last, insert)
        b.cbranch(b.icmp_signed(">", j, zero), check, place)
        b.position_at_end(check)
        jm = b.sub(j, one)
        prev = fn.load(vals, jm)
        b.cbranch(b.fcmp_ordered("<", prev, v), move, place)
        b.position_at_end(move)
        b.store(prev, b.gep(vals, [j]))
        b.store(fn.load(ids, jm), b.gep(ids, [j]))
        j.add_incoming(jm, move)
        b.branch(shift)
        b.position_at_end(place)
        b.store(v, b.gep(vals, [j]))
        b.store(i, b.gep(ids, [j]))
        new_thr = fn.load(vals, last)
        b.branch(cont)
        b.position_at_end(cont)
        out = b.phi(F32)
        out.add_incoming(thr, entry)
        out.add_incoming(new_thr, place)
        return [out]

    fn.loop(zero, n, [minus_inf], body)
    b.ret_void()


def _row_exp(m: ir.Module) -> None:
    """e[i] = exp(x[i] - top) (0 below -87 nats); out = (sum e, sum e (x - top)) in float64."""
    fn = _Fn(m, "row_exp", ir.VoidType(), [PF32, I64, F32, PF32, PF64])
    x, n, top, e, out = fn.args
    b = fn.b
    floor = fn.f(EXP_FLOOR)

    def body(i, c):
        s = fn.sub(fn.load(x, i), top)
        ok = fn.gt(s, floor)
        sc = fn.select(ok, s, floor)
        v = fn.select(ok, fn.exp_neg(sc), fn.f(0.0))
        b.store(v, b.gep(e, [i]))
        v64 = b.fpext(v, F64)
        return [fn.acc(c[0], v64), fn.acc(c[1], b.fmul(v64, b.fpext(sc, F64)))]

    zero = ir.Constant(F64, 0.0)
    z, es = fn.loop(ir.Constant(I64, 0), n, [zero, zero], body)
    b.store(z, b.gep(out, [ir.Constant(I64, 0)]))
    b.store(es, b.gep(out, [ir.Constant(I64, 1)]))
    b.ret_void()


def _kl_js(m: ir.Module) -> None:
    """out = (KL(P_a || P_b), JS(P_a, P_b)) for rows with logits x, unnormalised probabilities
    e = exp(x - max) and inverse sums i (p = e i); dc = c_a - c_b, c = max + log(sum e).

    Every term is >= 0 and computed to float32 precision, so no term cancels another and nearly
    equal rows keep their relative precision (the textbook sums subtract large logs):
    KL = sum pa psi(t), t = log(pa / pb) = xa - xb - dc exactly from the logits (also where pb
    underflowed), psi(t) = t - 1 + e^-t; JS = 1/4 sum (pa + pb) g(d), d = (pa - pb) / (pa + pb)."""
    fn = _Fn(m, "kl_js", ir.VoidType(), [PF32, PF32, F32, PF32, PF32, F32, F32, I64, PF64])
    xa, ea, ia, xb, eb, ib, dc, n, out = fn.args
    b = fn.b
    zero, half = fn.f(0.0), fn.f(0.5)
    chunk = ir.Constant(I64, CHUNK)
    n_chunks = b.sdiv(b.add(n, ir.Constant(I64, CHUNK - 1)), chunk)

    def term(i, c):
        pa = fn.mul(fn.load(ea, i), ia)
        pb = fn.mul(fn.load(eb, i), ib)
        t = fn.sub(fn.sub(fn.load(xa, i), fn.load(xb, i)), dc)
        small = b.and_(b.fcmp_ordered("<=", t, half), b.fcmp_ordered(">=", t, fn.f(-0.5)))
        by_series = fn.mul(pa, fn.mul(fn.horner(t, _PSI), fn.mul(t, t)))
        direct = fn.add(fn.sub(fn.mul(pa, t), pa), pb)
        kl = fn.select(fn.gt(pa, zero), fn.select(small, by_series, direct), pb)
        s = fn.add(pa, pb)
        d = fn.select(fn.gt(s, zero), fn.div(fn.sub(pa, pb), s), zero)
        return [fn.acc(c[0], kl), fn.acc(c[1], fn.mul(s, fn.js_g(d)))]

    def chunk_body(k, c):
        start = b.mul(k, chunk)
        stop = b.add(start, chunk)
        stop = b.select(b.icmp_signed("<", stop, n), stop, n)
        kl, js = fn.loop(start, stop, [zero, zero], term)
        return [fn.acc(c[0], b.fpext(kl, F64)), fn.acc(c[1], b.fpext(js, F64))]

    zero64 = ir.Constant(F64, 0.0)
    kl, js = fn.loop(ir.Constant(I64, 0), n_chunks, [zero64, zero64], chunk_body)
    b.store(kl, b.gep(out, [ir.Constant(I64, 0)]))
    b.store(b.fmul(js, ir.Constant(F64, 0.25)), b.gep(out, [ir.Constant(I64, 1)]))
    b.ret_void()


def compile_module(module: ir.Module) -> tuple[llvm.ExecutionEngine, str]:
    """JIT-compile ``module`` for the host CPU at -O3 with vectorisation; (engine, optimised IR)."""
    with contextlib.suppress(Exception):  # needed by older llvmlite; an error (deprecated) since 0.45
        llvm.initialize()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # not available on every platform (numba falls back the same way)
        features = ""
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, opt=3)
    mod = llvm.parse_assembly(str(module))
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return engine, str(mod)


class Kernels:
    """The compiled functions as ctypes callables. They take raw addresses (``ndarray.ctypes.data``
    plus byte offsets: computing those once per call of ``lens_stats`` instead of per row saves
    ~10 us a call) of C-contiguous float32 rows and float64 outputs:

    - ``row_max(x, n) -> float``
    - ``count_above(x, n, t) -> int``: how many of x[:n] exceed t
    - ``top_k(x, n, k, ids, vals)``: int64 ids[:k] of the k largest, largest first, ties by lower id
      (-1 where fewer than k entries are > -inf); float32 vals[:k] is scratch
    - ``row_exp(x, n, top, e, out)``: e = exp(x - top), 0 below -87 nats;
      out[:2] = (sum e, sum e (x - top))
    - ``kl_js(xa, ea, ia, xb, eb, ib, dc, n, out)``: out[:2] = (KL(P_a || P_b), JS(P_a, P_b)) with
      p = e i and dc = c_a - c_b, c = max + log(sum e)
    """

    def __init__(self) -> None:
        module = ir.Module(name="lens_kernels")
        for build in (_row_max, _count_above, _top_k, _row_exp, _kl_js):
            build(module)
        self._engine, self.ir = compile_module(module)  # the engine keeps the machine code alive

        def get(name: str, ret: object, *args: object) -> Callable:
            return ctypes.CFUNCTYPE(ret, *args)(self._engine.get_function_address(name))

        p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        self.row_max = get("row_max", f32, p, i64)
        self.count_above = get("count_above", i64, p, i64, f32)
        self.top_k = get("top_k", None, p, i64, i64, p, p)
        self.row_exp = get("row_exp", None, p, i64, f32, p, p)
        self.kl_js = get("kl_js", None, p, p, f32, p, p, f32, f32, i64, p)


_LOCK = threading.Lock()
_KERNELS: list[Kernels] = []


def kernels() -> Kernels:
    """The compiled kernels, built on first use (~0.2 s: llvmlite's import, then LLVM's optimiser
    and code generator, which run without the GIL)."""
    with _LOCK:
        if not _KERNELS:
            _KERNELS.append(Kernels())
        return _KERNELS[0]


def prepare() -> None:
    """Build the kernels on a background thread, e.g. while a model loads; a lens computed before
    they are ready waits for them."""
    if not _KERNELS:
        threading.Thread(target=kernels, name="lens-kernels", daemon=True).start()
