/* moe_gemm_mfma.hip (moe_up_mfma then moe_down_mfma) on the wave64
 * emulator (emu.h) against a double-precision reference: 4 experts, one of
 * them empty, segments not multiples of the row tile, K not a multiple of
 * BK, biases, gate/up rows split or interleaved. The down GEMM is checked
 * on the h the up GEMM stored (rounded to the weight dtype). UNALIGNED=1
 * runs the plain-load path. */
#include <random>
#include <vector>
#include "emu.h"
#include KERNEL
alignas(16) unsigned char smem_up[65536], smem_down[65536];
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
static std::function<void()> launch_fn;
static void body() { launch_fn(); }
static double glu_ref(double g, double u) { return g / (1 + exp(-g)) * u; }
#if defined(B_F32) && B_F32
typedef float BT; static BT tob(float f) { return f; } static double fromb(BT b) { return b; }
#else
typedef u16 BT; static BT tob(float f) { return to16(f); } static double fromb(BT b) { return from16(b); }
#endif

int main()
{
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> U(-1, 1);
    const int E = 4; const long H = 72, I = 40;
    std::vector<int> off = {0, 5, 5, 37, 50}; /* expert 1 empty */
    const long R = off[E];
    std::vector<u16> x(R * H), w1((size_t)E * 2 * I * H), w2((size_t)E * H * I);
    for (auto &v : x) v = to16(U(rng));
    for (auto &v : w1) v = to16(U(rng) * 0.3f);
    for (auto &v : w2) v = to16(U(rng) * 0.3f);
    std::vector<BT> b1((size_t)E * 2 * I), b2((size_t)E * H);
    for (auto &v : b1) v = tob(U(rng));
    for (auto &v : b2) v = tob(U(rng));
    std::vector<float> h(R * I, 0);
    std::vector<u16> y(R * H, 0xffff);
    int vec = getenv("UNALIGNED") ? 0 : 1;
    unsigned gx = (unsigned)(R / UP_BM + E);
    launch_fn = [&] { moe_up_mfma(R, E, H, I, off.data(), 1, x.data(), H, vec, w1.data(), 2 * I * H, H, vec, b1.data(), 2 * I, h.data()); };
    if (!emu_launch(gx, UP_THREADS, body, (unsigned)((I + UP_BN - 1) / UP_BN))) return 1;
    launch_fn = [&] { moe_down_mfma(R, E, I, H, off.data(), 1, h.data(), vec, w2.data(), H * I, I, vec, b2.data(), H, y.data(), H); };
    gx = (unsigned)(R / DOWN_BM + E);
    if (!emu_launch(gx, DOWN_THREADS, body, (unsigned)((H + DOWN_BN - 1) / DOWN_BN))) return 1;
    const u16 *h16 = (const u16 *)h.data();
    int bad = 0; double eh = 0, ey = 0;
    for (int e = 0; e < E; e++)
        for (long r = off[e]; r < off[e + 1]; r++) {
            std::vector<double> hr(I);
            for (long c = 0; c < I; c++) {
                double g = 0, u = 0;
                long rg = W1_IL ? 2 * c : c, ru = W1_IL ? 2 * c + 1 : I + c;
                for (long k = 0; k < H; k++) {
                    g += (double)from16(x[r * H + k]) * from16(w1[((size_t)e * 2 * I + rg) * H + k]);
                    u += (double)from16(x[r * H + k]) * from16(w1[((size_t)e * 2 * I + ru) * H + k]);
                }
                if (HAS_B1) { g += fromb(b1[(size_t)e * 2 * I + rg]); u += fromb(b1[(size_t)e * 2 * I + ru]); }
                double ref = glu_ref(g, u), got = from16(h16[r * I + c]);
                hr[c] = got; /* the down GEMM consumes what up stored */
                double d = fabs(got - ref); eh = std::max(eh, d);
                if (!(d <= (MF_BF16 ? 3e-2 : 4e-3) * (1 + fabs(ref)))) { if (bad++ < 5) printf("  h r%ld c%ld got %g ref %g\n", r, c, got, ref); }
            }
            for (long n = 0; n < H; n++) {
                double s = 0;
                for (long k = 0; k < I; k++) s += hr[k] * from16(w2[((size_t)e * H + n) * I + k]);
                if (HAS_B2) s += fromb(b2[(size_t)e * H + n]);
                double got = from16(y[r * H + n]), d = fabs(got - s); ey = std::max(ey, d);
                if (!(d <= (MF_BF16 ? 3e-2 : 4e-3) * (1 + fabs(s)))) { if (bad++ < 5) printf("  y r%ld n%ld got %g ref %g\n", r, n, got, s); }
            }
        }
    printf("moe up+down: max|err| h %.2e y %.2e  %s\n", eh, ey, bad ? "FAIL" : "ok");
    return bad != 0;
}
