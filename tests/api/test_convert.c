/* f16 and bf16 conversions (api/xattn_core.h): exact widening, rounding to
 * nearest even, overflow to infinity, subnormals, −0 and NaN, against
 * references computed here in double from the formats' definitions; and
 * the array forms, equal to the scalar ones, with their bad input. */
#include "api_test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t rng_state = 0x9e3779b9u;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* ---- f16 ----------------------------------------------------------------- */

enum { F16_INF = 0x7c00, F16_SIGN = 0x8000 };

/* The value of a non-negative, non-NaN f16 from its definition; infinity
 * counts as 65536, the next step of the top binade, so rounding to it is
 * rounding to the nearest (ties to even: 0x7c00 is even). */
static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return 65536.0;
    if (e == 0) return ldexp(m, -24);
    return ldexp(1024 + m, e - 25);
}

/* The f16 nearest to x (ties to the even pattern), by search. */
static uint16_t f16_nearest(float x)
{
    uint16_t sign = signbit(x) ? F16_SIGN : 0;
    double a = fabs((double)x);
    if (a >= 65536.0) return sign | F16_INF;
    uint16_t lo = 0, hi = F16_INF; /* f16_value(lo) <= a < f16_value(hi) */
    while (hi - lo > 1) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (f16_value(mid) <= a) lo = mid; else hi = mid;
    }
    double dl = a - f16_value(lo), dh = f16_value(hi) - a;
    uint16_t r = dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
    return sign | r;
}

static void test_f16_to_f32_is_exact_for_every_value(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float got = xattn_f16_to_f32((uint16_t)h);
        int neg = (h & F16_SIGN) != 0;
        uint16_t mag = (uint16_t)(h & 0x7fff);
        if (mag > F16_INF) {
            if (!isnan(got) || !!signbit(got) != neg) fail_msg("f16 0x%04x: %g, not NaN", h, got);
            continue;
        }
        double want = mag == F16_INF ? INFINITY : f16_value(mag);
        float w = (float)(neg ? -want : want);
        if (f32_bits(got) != f32_bits(w))
            fail_msg("f16 0x%04x: got %a, want %a", h, (double)got, (double)w);
    }
}

static void test_f32_to_f16_round_trips_every_f16(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        if ((h & 0x7fff) > F16_INF) continue;
        uint16_t back = xattn_f32_to_f16(xattn_f16_to_f32((uint16_t)h));
        if (back != h) fail_msg("f16 0x%04x came back as 0x%04x", h, back);
    }
}

/* Every midpoint between neighbours (subnormal, normal, and the one above
 * 65504 that decides overflow) goes to the even one; one f32 step either
 * side goes to the nearer. */
static void test_f32_to_f16_rounds_ties_to_even(void **state)
{
    (void)state;
    for (uint16_t h = 0; h < F16_INF; h++) {
        float mid = (float)((f16_value(h) + f16_value((uint16_t)(h + 1))) / 2);
        assert_true((double)mid * 2 == f16_value(h) + f16_value((uint16_t)(h + 1)));
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
        for (int s = 0; s < 2; s++) {
            uint16_t sign = s ? F16_SIGN : 0;
            float m = s ? -mid : mid;
            if (xattn_f32_to_f16(m) != (sign | even))
                fail_msg("midpoint %a: 0x%04x, want 0x%04x", (double)m, xattn_f32_to_f16(m),
                         sign | even);
            float below = nextafterf(m, 0.0f), above = nextafterf(m, s ? -INFINITY : INFINITY);
            assert_int_equal(xattn_f32_to_f16(below), sign | h);
            assert_int_equal(xattn_f32_to_f16(above), sign | (h + 1));
        }
    }
}

static void test_f32_to_f16_matches_nearest_on_random_values(void **state)
{
    (void)state;
    for (int i = 0; i < 1 << 20; i++) {
        uint32_t u = rng();
        /* Half of them in and near f16's range, where the rounding is. */
        if (i & 1) u = (u & 0x80ffffffu) | ((0x66u + (u >> 24) % 0x2cu) << 23);
        float x = f32_of(u);
        if (isnan(x)) continue;
        uint16_t got = xattn_f32_to_f16(x), want = f16_nearest(x);
        if (got != want) fail_msg("%a: 0x%04x, want 0x%04x", (double)x, got, want);
    }
}

static void test_f32_to_f16_special_values(void **state)
{
    (void)state;
    assert_int_equal(xattn_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(xattn_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(xattn_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(xattn_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(xattn_f32_to_f16(65504.0f), 0x7bff);         /* largest finite */
    assert_int_equal(xattn_f32_to_f16(65519.996f), 0x7bff);       /* just below the midpoint */
    assert_int_equal(xattn_f32_to_f16(65520.0f), 0x7c00);         /* the midpoint: overflow */
    assert_int_equal(xattn_f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(xattn_f32_to_f16(FLT_MAX), 0x7c00);
    assert_int_equal(xattn_f32_to_f16(0x1p-14f), 0x0400);         /* smallest normal */
    assert_int_equal(xattn_f32_to_f16(0x1p-24f), 0x0001);         /* smallest subnormal */
    assert_int_equal(xattn_f32_to_f16(-0x1p-24f), 0x8001);
    assert_int_equal(xattn_f32_to_f16(0x1p-25f), 0x0000);         /* tie to even: 0 */
    assert_int_equal(xattn_f32_to_f16(-0x1p-25f), 0x8000);        /* −0 */
    assert_int_equal(xattn_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(xattn_f32_to_f16(0x1.8p-24f), 0x0002);       /* 1.5 ulp: tie to even */
    assert_int_equal(xattn_f32_to_f16(0x1p-149f), 0x0000);        /* f32 subnormal */
    assert_int_equal(xattn_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(xattn_f32_to_f16(0x1.002p0f), 0x3c00);       /* tie: even 1.0 */
    assert_int_equal(xattn_f32_to_f16(0x1.006p0f), 0x3c02);       /* tie: even up */
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
                             0x7f802000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = xattn_f32_to_f16(f32_of(nans[i]));
        if ((h & 0x7fff) <= F16_INF || !(h & 0x200) || !!(h & F16_SIGN) != !!(nans[i] >> 31))
            fail_msg("NaN 0x%08x became 0x%04x, not a quiet NaN of the same sign", nans[i], h);
    }
}

/* ---- bf16 ---------------------------------------------------------------- */

enum { BF16_INF = 0x7f80, BF16_SIGN = 0x8000 };

/* The value of a non-negative, non-NaN bf16; infinity counts as 2^128. */
static double bf16_value(uint16_t b)
{
    if (b == BF16_INF) return ldexp(1.0, 128);
    return (double)f32_of((uint32_t)b << 16);
}

static uint16_t bf16_nearest(float x)
{
    uint16_t sign = signbit(x) ? BF16_SIGN : 0;
    double a = fabs((double)x);
    uint16_t lo = (uint16_t)((f32_bits(x) & 0x7fffffffu) >> 16); /* truncation: <= a */
    if (lo == BF16_INF) return sign | BF16_INF;
    uint16_t hi = (uint16_t)(lo + 1);
    double dl = a - bf16_value(lo), dh = bf16_value(hi) - a;
    uint16_t r = dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
    return sign | r;
}

static void test_bf16_to_f32_is_exact_for_every_value(void **state)
{
    (void)state;
    for (uint32_t b = 0; b <= 0xffff; b++) {
        float got = xattn_bf16_to_f32((uint16_t)b);
        if ((b & 0x7fff) > BF16_INF) {
            if (!isnan(got) || !!signbit(got) != !!(b & BF16_SIGN))
                fail_msg("bf16 0x%04x: %g, not NaN", b, got);
            continue;
        }
        /* bf16 is the top half of an f32: the value is that f32's. */
        assert_int_equal(f32_bits(got), b << 16);
        assert_int_equal(xattn_f32_to_bf16(got), b); /* and it comes back */
    }
}

static void test_f32_to_bf16_matches_nearest_on_random_values(void **state)
{
    (void)state;
    for (int i = 0; i < 1 << 20; i++) {
        uint32_t u = rng();
        if (i % 4 == 1) u = (u & 0xffff0000u) | 0x8000u; /* ties */
        if (i % 4 == 2) u |= 0x7f000000u;                /* near overflow */
        float x = f32_of(u);
        if (isnan(x)) continue;
        uint16_t got = xattn_f32_to_bf16(x), want = bf16_nearest(x);
        if (got != want) fail_msg("%a: 0x%04x, want 0x%04x", (double)x, got, want);
    }
}

static void test_f32_to_bf16_special_values(void **state)
{
    (void)state;
    assert_int_equal(xattn_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(xattn_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(xattn_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(xattn_f32_to_bf16(FLT_MAX), 0x7f80);       /* rounds past 0x7f7f */
    assert_int_equal(xattn_f32_to_bf16(f32_of(0x7f7f7fffu)), 0x7f7f);
    assert_int_equal(xattn_f32_to_bf16(f32_of(0x7f7f8000u)), 0x7f80); /* tie: even is inf */
    assert_int_equal(xattn_f32_to_bf16(f32_of(0x00010000u)), 0x0001); /* subnormal kept */
    assert_int_equal(xattn_f32_to_bf16(f32_of(0x00008000u)), 0x0000); /* tie: even 0 */
    assert_int_equal(xattn_f32_to_bf16(f32_of(0x80018000u)), 0x8002); /* tie: even up */
    assert_int_equal(xattn_f32_to_bf16(1.0f), 0x3f80);
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
                             0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t b = xattn_f32_to_bf16(f32_of(nans[i]));
        if ((b & 0x7fff) <= BF16_INF || !(b & 0x40) || !!(b & BF16_SIGN) != !!(nans[i] >> 31))
            fail_msg("NaN 0x%08x became 0x%04x, not a quiet NaN of the same sign", nans[i], b);
    }
}

/* ---- arrays ----------------------------------------------------------------- */

enum { N = 4099 }; /* not a multiple of any vector width */

static void test_arrays_equal_the_scalar_conversions(void **state)
{
    (void)state;
    static float f[N], back[N];
    static uint16_t h[N], hb[N];
    for (int i = 0; i < N; i++) f[i] = f32_of(rng());
    f[0] = -0.0f;
    f[1] = NAN;
    f[2] = 0x1p-24f;
    f[3] = 70000.0f;

    XT_ASSERT_STATUS(xattn_f32_to_f16_array(h, f, N), XATTN_OK);
    XT_ASSERT_STATUS(xattn_f16_to_f32_array(back, h, N), XATTN_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(h[i], xattn_f32_to_f16(f[i]));
        assert_int_equal(f32_bits(back[i]), f32_bits(xattn_f16_to_f32(h[i])));
    }
    XT_ASSERT_STATUS(xattn_f32_to_bf16_array(hb, f, N), XATTN_OK);
    XT_ASSERT_STATUS(xattn_bf16_to_f32_array(back, hb, N), XATTN_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(hb[i], xattn_f32_to_bf16(f[i]));
        assert_int_equal(f32_bits(back[i]), f32_bits(xattn_bf16_to_f32(hb[i])));
    }
}

static void test_arrays_reject_null_and_overlap(void **state)
{
    (void)state;
    float f[8] = {0};
    uint16_t h[8];
    memset(h, XT_SENTINEL_HOST, sizeof h);
    XT_EXPECT_ERROR(xattn_f32_to_f16_array(NULL, f, 8), XATTN_ERR_INVALID_ARGUMENT, "dst");
    XT_EXPECT_ERROR(xattn_f32_to_f16_array(h, NULL, 8), XATTN_ERR_INVALID_ARGUMENT, "src");
    XT_EXPECT_ERROR(xattn_f16_to_f32_array(NULL, h, 8), XATTN_ERR_INVALID_ARGUMENT, "dst");
    XT_EXPECT_ERROR(xattn_bf16_to_f32_array(f, NULL, 8), XATTN_ERR_INVALID_ARGUMENT, "src");
    XT_EXPECT_ERROR(xattn_f32_to_bf16_array(NULL, f, 8), XATTN_ERR_INVALID_ARGUMENT, "dst");
    /* n = 0 converts nothing, with or without arrays. */
    XT_ASSERT_STATUS(xattn_f32_to_f16_array(NULL, NULL, 0), XATTN_OK);
    XT_ASSERT_STATUS(xattn_bf16_to_f32_array(NULL, NULL, 0), XATTN_OK);
    XT_ASSERT_HOST_UNTOUCHED(h, sizeof h, XT_SENTINEL_HOST);

    /* In place, or sharing part of their bytes. */
    float buf[8];
    for (int i = 0; i < 8; i++) buf[i] = (float)i;
    float saved[8];
    memcpy(saved, buf, sizeof buf);
    XT_EXPECT_ERROR(xattn_f32_to_f16_array((uint16_t *)buf, buf, 8), XATTN_ERR_INVALID_ARGUMENT,
                    "dst", "src");
    XT_EXPECT_ERROR(xattn_f32_to_bf16_array((uint16_t *)(buf + 2), buf, 4),
                    XATTN_ERR_INVALID_ARGUMENT, "dst", "src");
    XT_EXPECT_ERROR(xattn_f16_to_f32_array(buf + 1, (const uint16_t *)buf, 4),
                    XATTN_ERR_INVALID_ARGUMENT, "dst", "src");
    assert_memory_equal(buf, saved, sizeof buf);
    /* Adjacent is not overlapping. */
    XT_ASSERT_STATUS(xattn_f32_to_f16_array((uint16_t *)(buf + 4), buf, 4), XATTN_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_to_f32_is_exact_for_every_value),
        cmocka_unit_test(test_f32_to_f16_round_trips_every_f16),
        cmocka_unit_test(test_f32_to_f16_rounds_ties_to_even),
        cmocka_unit_test(test_f32_to_f16_matches_nearest_on_random_values),
        cmocka_unit_test(test_f32_to_f16_special_values),
        cmocka_unit_test(test_bf16_to_f32_is_exact_for_every_value),
        cmocka_unit_test(test_f32_to_bf16_matches_nearest_on_random_values),
        cmocka_unit_test(test_f32_to_bf16_special_values),
        cmocka_unit_test(test_arrays_equal_the_scalar_conversions),
        cmocka_unit_test(test_arrays_reject_null_and_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
