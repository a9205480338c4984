/* attn_mfma.hip on the wave64 emulator (emu.h) against a double-precision
 * reference of the contract, one tile configuration per build (-D options
 * as the host passes them, KERNEL the source path): masks (causal, window,
 * bottom-right aligned), GQA packing, soft cap, ALiBi, sinks, LSE, NaN in
 * the V of a key hidden from most rows of its band, paged KV with pages of
 * 16, 64 and 5 keys and a bad block-table entry, split-KV partials merged
 * by their LSE, ragged Q and KV. UNALIGNED=1 runs the plain-load path. */
#include <random>
#include <vector>
#include "emu.h"
#include KERNEL
namespace xattn_mfma {
alignas(16) unsigned char smem[65536];
}
using xattn_mfma::attn_args;
typedef unsigned short u16;
static u16 to16(float f)
{
#if MF_BF16
    uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return u >> 16;
#else
    _Float16 h = (_Float16)f; u16 s; memcpy(&s, &h, 2); return s;
#endif
}
static float from16(u16 h) { return emu_h(h, MF_BF16); }
static attn_args A;
static void body() { attn_mfma(A); }

struct Case {
    const char *name;
    int B, Sq, Sk, Hq, Hkv, wl, wr, splits, layout, page, ragged_q;
    float softcap; int alibi, sinks, lse, nan_hidden;
};
static double tol() { return MF_BF16 ? 3e-2 : 4e-3; }

static int run_case(const Case &c)
{
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> U(-1, 1);
    const int D = DQK, DVv = DV, group = c.Hq / c.Hkv;
    const int pack = (group > 1 && c.Sq < 128) ? group : 1;
    const int head_groups = c.Hq / pack;
    const int q_tiles = (c.Sq * pack + BQ - 1) / BQ;
    // per-sequence lengths (ragged: shorter for some)
    std::vector<int> sq(c.B), sk(c.B);
    for (int b = 0; b < c.B; b++) { sq[b] = c.ragged_q ? c.Sq - (b * 3) % c.Sq : c.Sq; sk[b] = c.layout ? c.Sk - (b * 7) % (c.Sk / 2) : c.Sk; }
    std::vector<int> cu_q(c.B + 1, 0), cu_k(c.B + 1, 0);
    for (int b = 0; b < c.B; b++) { cu_q[b + 1] = cu_q[b] + sq[b]; cu_k[b + 1] = cu_k[b] + sk[b]; }
    const long total_q = c.ragged_q ? cu_q[c.B] : (long)c.B * c.Sq;
    // Q: ragged [total_q][Hq][D] or [B][Sq][Hq][D]
    std::vector<u16> q((size_t)total_q * c.Hq * D);
    for (auto &x : q) x = to16(U(rng));
    // K/V: uniform [B][Sk][Hkv][D], ragged [total_k][Hkv][D], paged [pages][page][Hkv][D]
    int npages = 0, maxp = 0;
    std::vector<int> bt;
    long krows;
    if (c.layout == 2) {
        maxp = (c.Sk + c.page - 1) / c.page;
        npages = c.B * maxp + 1;
        bt.assign((size_t)c.B * maxp, -1);
        std::vector<int> perm(npages); for (int i = 0; i < npages; i++) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng);
        int n = 0;
        for (int b = 0; b < c.B; b++) for (int p = 0; p < maxp; p++) bt[(size_t)b * maxp + p] = perm[n++];
        if (c.page == 16) bt[1] = -1; /* a bad entry: zeros */
        krows = (long)npages * c.page;
    } else if (c.layout == 1) krows = cu_k[c.B];
    else krows = (long)c.B * c.Sk;
    std::vector<u16> k((size_t)krows * c.Hkv * D), v((size_t)krows * c.Hkv * DVv);
    for (auto &x : k) x = to16(U(rng));
    for (auto &x : v) x = to16(U(rng));
    auto krow = [&](int b, int j) -> long { // row index of key j of sequence b, -1 bad
        if (c.layout == 2) { int p = bt[(size_t)b * maxp + j / c.page]; return p < 0 || p >= npages ? -1 : (long)p * c.page + j % c.page; }
        if (c.layout == 1) return cu_k[b] + j;
        return (long)b * c.Sk + j;
    };
    std::vector<float> slopes(c.Hq), sinks(c.Hq);
    for (int h = 0; h < c.Hq; h++) { slopes[h] = 0.05f * (h + 1); sinks[h] = 0.5f * h - 0.7f; }
    const float scale = 1.0f / sqrtf((float)D);
    // NaN in V at a key hidden from every row (causal: the last key, for all but the last row... use key sk-1 with wr=0)
    if (c.nan_hidden) {
        for (int b = 0; b < c.B; b++) {
            long r = krow(b, sk[b] - 1);
            for (int hk = 0; hk < c.Hkv; hk++) v[((size_t)r * c.Hkv + hk) * DVv + 3] = MF_BF16 ? 0x7fc0 : 0x7e00;
        }
    }
    std::vector<u16> o((size_t)total_q * c.Hq * DVv, 0xffff);
    std::vector<float> lse((size_t)c.Hq * total_q, 12345.0f);
    const long part_rows = (long)c.B * c.Sq;
    std::vector<float> part((size_t)c.splits * part_rows * c.Hq * (DV_PAD + 1), 777.0f);
    std::vector<int> seqlens(sk);
    int split_len = 0;
    if (c.splits > 1) split_len = ((c.Sk + c.splits - 1) / c.splits + BK - 1) / BK * BK;

    attn_args a; memset(&a, 0, sizeof a);
    a.batch = c.B; a.seqlen_q = c.Sq; a.seqlen_k = c.Sk; a.hq = c.Hq; a.group = group;
    a.kv_splits = c.splits; a.split_len = split_len; a.q_ragged = c.ragged_q; a.kv_layout = c.layout;
    a.page_size = c.page; a.num_pages = npages; a.max_pages = maxp; a.total_q = total_q; a.total_k = cu_k[c.B];
    a.wl = c.wl; a.wr = c.wr; a.scale = scale; a.softcap = c.softcap;
    a.has_lse = c.lse; a.has_alibi = c.alibi; a.has_sinks = c.sinks;
    a.q = q.data(); a.q_st = (long)c.Hq * D; a.q_sh = D; a.q_sb = (long)c.Sq * a.q_st;
    a.k = k.data(); a.v = v.data();
    if (c.layout == 2) { a.k_sb = (long)c.page * c.Hkv * D; a.v_sb = (long)c.page * c.Hkv * DVv; }
    else { a.k_sb = (long)c.Sk * c.Hkv * D; a.v_sb = (long)c.Sk * c.Hkv * DVv; }
    a.k_st = (long)c.Hkv * D; a.k_sh = D; a.v_st = (long)c.Hkv * DVv; a.v_sh = DVv;
    a.o = o.data(); a.o_st = (long)c.Hq * DVv; a.o_sh = DVv; a.o_sb = (long)c.Sq * a.o_st;
    a.lse = lse.data(); a.lse_sh = total_q; a.lse_st = 1;
    a.cu_q = cu_q.data(); a.cu_k = cu_k.data(); a.block_table = bt.empty() ? cu_k.data() : bt.data(); a.bt_stride = maxp;
    a.seqlens_k = seqlens.data(); a.slopes = slopes.data(); a.sinks = sinks.data(); a.part = part.data();
    a.pack = pack; a.head_groups = head_groups; a.q_tiles = q_tiles; a.aligned = getenv("UNALIGNED") ? 0 : 1;
    long blocks = (long)c.B * head_groups * q_tiles * c.splits;
    if (c.ragged_q) {
        a.tile_space = (long)total_q * pack / BQ + c.B;
        blocks = (long)head_groups * a.tile_space * c.splits;
    }
    A = a;
    if (!emu_launch((unsigned)blocks, THREADS, body)) return 1;

    // reference + compare
    double err = 0, lerr = 0; int bad = 0;
    for (int b = 0; b < c.B; b++)
        for (int i = 0; i < sq[b]; i++)
            for (int h = 0; h < c.Hq; h++) {
                long grow = c.ragged_q ? cu_q[b] + i : (long)b * c.Sq + i;
                int hk = h / group;
                long diag = i + sk[b] - sq[b];
                long lo = c.wl >= 0 ? std::max(0L, diag - c.wl) : 0, hi = c.wr >= 0 ? std::min((long)sk[b], diag + c.wr + 1) : sk[b];
                std::vector<double> s;
                double mx = -INFINITY;
                for (long j = lo; j < hi; j++) {
                    long r = krow(b, j);
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)from16(q[((size_t)grow * c.Hq + h) * D + d]) * (r < 0 ? 0.0 : from16(k[((size_t)r * c.Hkv + hk) * D + d]));
                    double x = dot * scale;
                    if (c.softcap > 0) x = c.softcap * tanh(x / c.softcap);
                    if (c.alibi) x -= slopes[h] * fabs((double)(diag - j));
                    s.push_back(x); mx = std::max(mx, x);
                }
                double den = 0; for (double x : s) den += exp(x - mx);
                double ref_lse = s.empty() ? -INFINITY : mx + log(den);
                double tot = den;
                if (c.sinks && !s.empty()) tot += exp(sinks[h] - mx);
                double full_lse = s.empty() ? -INFINITY : mx + log(tot);
                for (int d = 0; d < DVv; d++) {
                    double acc = 0;
                    for (long j = lo; j < hi; j++) { long r = krow(b, j); acc += exp(s[j - lo] - mx) * (r < 0 ? 0.0 : from16(v[((size_t)r * c.Hkv + hk) * DVv + d])); }
                    double ref;
                    double got;
                    if (c.splits > 1) {
                        // merge partials by LSE
                        double M = -INFINITY;
                        for (int sp = 0; sp < c.splits; sp++) { double L = part[(size_t)c.splits * part_rows * c.Hq * DV_PAD + ((size_t)sp * part_rows + grow) * c.Hq + h]; M = std::max(M, L); }
                        double num = 0, dd = 0;
                        for (int sp = 0; sp < c.splits; sp++) {
                            size_t prow = ((size_t)sp * part_rows + grow) * c.Hq + h;
                            double L = part[(size_t)c.splits * part_rows * c.Hq * DV_PAD + prow];
                            if (L == -INFINITY) continue;
                            num += exp(L - M) * part[prow * DV_PAD + d]; dd += exp(L - M);
                        }
                        got = dd > 0 ? num / dd : 0;
                        ref = s.empty() ? 0 : acc / den;
                        if (d == 0 && std::isfinite(ref_lse)) lerr = std::max(lerr, fabs(M + log(dd) - ref_lse));
                    } else {
                        ref = s.empty() ? 0 : acc / tot;
                        got = from16(o[((size_t)grow * c.Hq + h) * DVv + d]);
                    }
                    double e = (std::isnan(got) && std::isnan(ref)) ? 0 : fabs(got - ref);
                    if (!(std::isnan(got) && std::isnan(ref)) && !(e <= tol() * (1 + fabs(ref)))) { if (bad < 5) printf("  mismatch b%d i%d h%d d%d got %g ref %g\n", b, i, h, d, got, ref); bad++; }
                    if (e > err || e != e) err = e != e ? INFINITY : e;
                }
                if (c.splits == 1 && c.lse) {
                    double got = lse[(size_t)h * total_q + grow];
                    double e = std::isinf(full_lse) ? (got == full_lse ? 0 : INFINITY) : fabs(got - full_lse);
                    if (e > lerr) lerr = e;
                    if (!(e < 1e-2)) { if (bad < 5) printf("  lse mismatch b%d i%d h%d got %g ref %g\n", b, i, h, got, full_lse); bad++; }
                }
            }
    printf("%-34s max|err| %.2e  lse %.2e  %s\n", c.name, err, lerr, bad ? "FAIL" : "ok");
    return bad != 0;
}

int main()
{
    // name B Sq Sk Hq Hkv wl wr splits layout page ragged softcap alibi sinks lse nan
    const Case cases[] = {
        {"uniform, no mask", 2, 40, 70, 2, 2, -1, -1, 1, 0, 0, 0, 0, 0, 0, 1, 0},
        {"causal, GQA 4 packed (decode-ish)", 2, 5, 50, 4, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0},
        {"causal prefill + NaN in hidden V", 1, 70, 70, 2, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1},
        {"window 7,3 softcap alibi sinks", 2, 33, 90, 2, 2, 7, 3, 1, 0, 0, 0, 30.0f, 1, 1, 1, 0},
        {"paged, page 16 (gather)", 2, 20, 80, 2, 2, -1, 0, 1, 2, 16, 0, 0, 0, 0, 1, 0},
        {"paged, page 64 (tile per page)", 2, 20, 150, 2, 1, -1, -1, 1, 2, 64, 0, 0, 0, 1, 1, 0},
        {"paged, page 5", 1, 9, 47, 2, 2, -1, 0, 1, 2, 5, 0, 0, 0, 0, 1, 0},
        {"split-KV x3 + LSE merge", 2, 3, 200, 4, 2, -1, -1, 3, 0, 0, 0, 0, 0, 0, 0, 0},
        {"ragged Q and KV, causal", 3, 37, 100, 2, 2, -1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 0},
        {"ragged Q, split x2, window", 2, 20, 120, 2, 1, 30, 0, 2, 1, 0, 1, 0, 0, 0, 0, 0},
    };
    int fails = 0;
    for (const Case &c : cases) fails += run_case(c);
    printf("%d of %zu cases failed\n", fails, sizeof cases / sizeof cases[0]);
    return fails != 0;
}
