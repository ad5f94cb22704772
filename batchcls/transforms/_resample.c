/* Crop-aware re-implementation of Pillow's 8-bit two-pass resampling (BILINEAR, BICUBIC).
 *
 * resize_crop(src, out_w, out_h, left, top, crop_w, crop_h, filter, vertical_first)
 *   src: HWC uint8 array, 3 (RGB) or 4 (RGBX) channels.
 *   Returns a C-contiguous uint8 array (3, crop_h, crop_w) equal, byte for byte, to
 *   Image.resize((out_w, out_h), filter) followed by crop((left, top, left+crop_w, top+crop_h)),
 *   computing only the kept pixels. filter: 2 = BILINEAR, 3 = BICUBIC (PIL enum values).
 *   vertical_first selects Pillow's pass order (the caller decides with Pillow's rule).
 *
 * Exactness: each output pixel's taps and fixed-point weights depend only on (in_size, out_size,
 * output index), computed in double exactly as Pillow does (same operation order), then rounded
 * to 22-bit fixed point; the integer accumulations are order-independent. The first pass
 * produces the same uint8 intermediate values Pillow produces for the rows/columns the second
 * pass reads. Build WITHOUT -ffast-math; -ffp-contract=off keeps FMA out of the double math.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PREC 22 /* 32 - 8 - 2, Pillow's PRECISION_BITS */

static double
filt_bilinear(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double
filt_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Taps for outputs first..first+count-1 of an in_size -> out_size resize.
 * lo[i]: first input index, n[i]: number of taps, k[i*ks + j]: fixed-point weights.
 * Returns ks (max taps) or 0 on allocation failure. */
static int
coeffs(int in_size, int out_size, int first, int count, int filter, int **lo_p, int **n_p,
       int32_t **k_p) {
    double (*f)(double) = filter == 3 ? filt_bicubic : filt_bilinear;
    double fsupport = filter == 3 ? 2.0 : 1.0;
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = fsupport * filterscale;
    int ks = (int)ceil(support) * 2 + 1;
    double ss = 1.0 / filterscale;
    int *lo = malloc(sizeof(int) * count), *n = malloc(sizeof(int) * count);
    int32_t *k = malloc(sizeof(int32_t) * (size_t)count * ks);
    double *w = malloc(sizeof(double) * ks);
    if (!lo || !n || !k || !w) {
        free(lo); free(n); free(k); free(w);
        return 0;
    }
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double v = f((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) w[x] /= ww;
        }
        for (int x = 0; x < ks; x++) {
            double v = x < xmax ? w[x] : 0.0;
            k[i * ks + x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PREC)) : (int32_t)(0.5 + v * (1 << PREC));
        }
        lo[i] = xmin;
        n[i] = xmax;
    }
    free(w);
    *lo_p = lo; *n_p = n; *k_p = k;
    return ks;
}

static inline uint8_t
clip8(int32_t v) {
    v >>= PREC;
    return v < 0 ? 0 : (v > 255 ? 255 : (uint8_t)v);
}

/* Horizontal pass on rows: dst[r][i][c] (3 channels packed, or planar when planes != NULL).
 * src rows given by base pointer + row stride, pixel stride = sc bytes. Columns relative to x0. */
static void
hpass(const uint8_t *src, Py_ssize_t srow, int sc, int nrows, int x0, int cnt, const int *lo,
      const int *n, const int32_t *k, int ks, uint8_t *dst, Py_ssize_t drow, uint8_t *planes,
      Py_ssize_t plane) {
    for (int r = 0; r < nrows; r++) {
        const uint8_t *line = src + r * srow;
        for (int i = 0; i < cnt; i++) {
            const uint8_t *p = line + (Py_ssize_t)(lo[i] - x0) * sc;
            const int32_t *kk = k + (Py_ssize_t)i * ks;
            int32_t s0 = 1 << (PREC - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < n[i]; x++, p += sc) {
                s0 += p[0] * kk[x];
                s1 += p[1] * kk[x];
                s2 += p[2] * kk[x];
            }
            if (planes) {
                uint8_t *o = planes + r * drow + i;
                o[0] = clip8(s0);
                o[plane] = clip8(s1);
                o[2 * plane] = clip8(s2);
            } else {
                uint8_t *o = dst + r * drow + i * 3;
                o[0] = clip8(s0);
                o[1] = clip8(s1);
                o[2] = clip8(s2);
            }
        }
    }
}


#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1
/* Horizontal pass for 4-byte pixels with SSE2 pmaddwd, two taps per step. Each 22-bit
 * coefficient is split as k = hi*2048 + lo (hi signed, lo in [0, 2048)), both int16, so the
 * int32 sums are sum(p*hi) and sum(p*lo) exactly and s = (Shi << 11) + Slo equals Pillow's
 * integer sum bit for bit. Output: 4 bytes per pixel to dst with stride dstep bytes (3 or 4),
 * or planar (planes != NULL). */
static int
hpass4(const uint8_t *src, Py_ssize_t srow, int nrows, int x0, int cnt, const int *lo,
       const int *n, const int32_t *k, int ks, uint8_t *dst, Py_ssize_t drow, int dstep,
       uint8_t *planes, Py_ssize_t plane) {
    int kp = (ks + 1) / 2; /* tap pairs */
    __m128i *kh = malloc(sizeof(__m128i) * (size_t)cnt * kp * 2);
    if (!kh) return 0;
    for (int i = 0; i < cnt; i++) {
        for (int j = 0; j < kp; j++) {
            int32_t k0 = 2 * j < n[i] ? k[i * ks + 2 * j] : 0;
            int32_t k1 = 2 * j + 1 < n[i] ? k[i * ks + 2 * j + 1] : 0;
            int16_t h0 = (int16_t)(k0 >> 11), l0 = (int16_t)(k0 & 2047);
            int16_t h1 = (int16_t)(k1 >> 11), l1 = (int16_t)(k1 & 2047);
            kh[(i * kp + j) * 2] = _mm_setr_epi16(h0, h1, h0, h1, h0, h1, h0, h1);
            kh[(i * kp + j) * 2 + 1] = _mm_setr_epi16(l0, l1, l0, l1, l0, l1, l0, l1);
        }
    }
    const __m128i zero = _mm_setzero_si128();
    const __m128i half = _mm_set1_epi32(1 << (PREC - 1));
    for (int r = 0; r < nrows; r++) {
        const uint8_t *line = src + r * srow;
        for (int i = 0; i < cnt; i++) {
            const uint8_t *p = line + (Py_ssize_t)(lo[i] - x0) * 4;
            const __m128i *kk = kh + (Py_ssize_t)i * kp * 2;
            __m128i ah = zero, al = zero;
            int x = 0, nn = n[i];
            for (; x + 1 < nn; x += 2, p += 8, kk += 2) {
                __m128i v = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), zero);
                v = _mm_unpacklo_epi16(v, _mm_srli_si128(v, 8));
                ah = _mm_add_epi32(ah, _mm_madd_epi16(v, kk[0]));
                al = _mm_add_epi32(al, _mm_madd_epi16(v, kk[1]));
            }
            if (x < nn) { /* odd tail: one pixel, its partner coefficient is 0 */
                int32_t w;
                memcpy(&w, p, 4);
                __m128i v = _mm_unpacklo_epi8(_mm_cvtsi32_si128(w), zero);
                v = _mm_unpacklo_epi16(v, zero);
                ah = _mm_add_epi32(ah, _mm_madd_epi16(v, kk[0]));
                al = _mm_add_epi32(al, _mm_madd_epi16(v, kk[1]));
            }
            __m128i s = _mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(ah, 11), al), half);
            s = _mm_srai_epi32(s, PREC);
            s = _mm_packs_epi32(s, s);
            s = _mm_packus_epi16(s, s);
            uint32_t px = (uint32_t)_mm_cvtsi128_si32(s);
            if (planes) {
                uint8_t *o = planes + r * drow + i;
                o[0] = (uint8_t)px;
                o[plane] = (uint8_t)(px >> 8);
                o[2 * plane] = (uint8_t)(px >> 16);
            } else {
                memcpy(dst + r * drow + (Py_ssize_t)i * dstep, &px, (size_t)dstep);
            }
        }
    }
    free(kh);
    return 1;
}
#endif

#ifndef HAVE_SSE2 /* scalar fallback */
/* Vertical pass: for each kept output row, accumulate width*sc values of the source rows
 * (row-major, vectorizable; integer sums are exact in any order). Source row index relative
 * to y0. Writes packed 3-channel rows (dst) or planar (planes). */
static void
vpass(const uint8_t *src, Py_ssize_t srow, int sc, int width, int y0, int cnt, const int *lo,
      const int *n, const int32_t *k, int ks, int32_t *acc, uint8_t *dst, Py_ssize_t drow,
      int dc, uint8_t *planes, Py_ssize_t plane) {
    int m = width * sc;
    for (int i = 0; i < cnt; i++) {
        const int32_t *kk = k + (Py_ssize_t)i * ks;
        for (int j = 0; j < m; j++) acc[j] = 1 << (PREC - 1);
        for (int y = 0; y < n[i]; y++) {
            const uint8_t *line = src + (Py_ssize_t)(lo[i] + y - y0) * srow;
            int32_t w = kk[y];
            for (int j = 0; j < m; j++) acc[j] += line[j] * w;
        }
        if (planes) {
            uint8_t *o = planes + (Py_ssize_t)i * drow;
            for (int x = 0; x < width; x++) {
                o[x] = clip8(acc[x * sc]);
                o[x + plane] = clip8(acc[x * sc + 1]);
                o[x + 2 * plane] = clip8(acc[x * sc + 2]);
            }
        } else {
            uint8_t *o = dst + (Py_ssize_t)i * drow;
            for (int x = 0; x < width; x++)
                for (int c = 0; c < dc; c++) o[x * dc + c] = clip8(acc[x * sc + c]);
        }
    }
}


#endif

#ifdef HAVE_SSE2
/* Vertical pass with SSE2 pmaddwd, two source rows per step (same hi/lo split as hpass4).
 * Computes, per kept output row, all width*sc bytes into rowbuf, then stores them packed
 * (dc channels) or planar. Returns 0 on allocation failure. */
static int
vpass_sse2(const uint8_t *src, Py_ssize_t srow, int sc, int width, int y0, int cnt,
           const int *lo, const int *n, const int32_t *k, int ks, uint8_t *dst,
           Py_ssize_t drow, int dc, uint8_t *planes, Py_ssize_t plane) {
    int m = width * sc, m8 = m & ~7;
    int kp = (ks + 1) / 2;
    uint8_t *rowbuf = malloc((size_t)m + 8);
    __m128i *kv = malloc(sizeof(__m128i) * (size_t)kp * 2);
    if (!rowbuf || !kv) {
        free(rowbuf); free(kv);
        return 0;
    }
    const __m128i zero = _mm_setzero_si128();
    const __m128i half = _mm_set1_epi32(1 << (PREC - 1));
    for (int i = 0; i < cnt; i++) {
        const int32_t *kk = k + (Py_ssize_t)i * ks;
        int nn = n[i];
        for (int j = 0; j < kp; j++) {
            int32_t k0 = 2 * j < nn ? kk[2 * j] : 0, k1 = 2 * j + 1 < nn ? kk[2 * j + 1] : 0;
            int16_t h0 = (int16_t)(k0 >> 11), l0 = (int16_t)(k0 & 2047);
            int16_t h1 = (int16_t)(k1 >> 11), l1 = (int16_t)(k1 & 2047);
            kv[2 * j] = _mm_setr_epi16(h0, h1, h0, h1, h0, h1, h0, h1);
            kv[2 * j + 1] = _mm_setr_epi16(l0, l1, l0, l1, l0, l1, l0, l1);
        }
        const uint8_t *base = src + (Py_ssize_t)(lo[i] - y0) * srow;
        for (int b = 0; b < m8; b += 8) {
            __m128i h03 = zero, h47 = zero, l03 = zero, l47 = zero;
            const uint8_t *p = base + b;
            int y = 0;
            for (; y + 1 < nn; y += 2, p += 2 * srow) {
                __m128i ra = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), zero);
                __m128i rb = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(p + srow)), zero);
                __m128i v03 = _mm_unpacklo_epi16(ra, rb), v47 = _mm_unpackhi_epi16(ra, rb);
                h03 = _mm_add_epi32(h03, _mm_madd_epi16(v03, kv[y]));
                h47 = _mm_add_epi32(h47, _mm_madd_epi16(v47, kv[y]));
                l03 = _mm_add_epi32(l03, _mm_madd_epi16(v03, kv[y + 1]));
                l47 = _mm_add_epi32(l47, _mm_madd_epi16(v47, kv[y + 1]));
            }
            if (y < nn) {
                __m128i ra = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)p), zero);
                __m128i v03 = _mm_unpacklo_epi16(ra, zero), v47 = _mm_unpackhi_epi16(ra, zero);
                h03 = _mm_add_epi32(h03, _mm_madd_epi16(v03, kv[y]));
                h47 = _mm_add_epi32(h47, _mm_madd_epi16(v47, kv[y]));
                l03 = _mm_add_epi32(l03, _mm_madd_epi16(v03, kv[y + 1]));
                l47 = _mm_add_epi32(l47, _mm_madd_epi16(v47, kv[y + 1]));
            }
            __m128i s03 = _mm_srai_epi32(_mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(h03, 11), l03), half), PREC);
            __m128i s47 = _mm_srai_epi32(_mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(h47, 11), l47), half), PREC);
            __m128i s16 = _mm_packs_epi32(s03, s47);
            _mm_storel_epi64((__m128i *)(rowbuf + b), _mm_packus_epi16(s16, s16));
        }
        for (int j = m8; j < m; j++) { /* scalar tail */
            int32_t acc = 1 << (PREC - 1);
            for (int y = 0; y < nn; y++) acc += base[(Py_ssize_t)y * srow + j] * kk[y];
            rowbuf[j] = clip8(acc);
        }
        if (planes) {
            uint8_t *o = planes + (Py_ssize_t)i * drow;
            for (int x = 0; x < width; x++) {
                o[x] = rowbuf[x * sc];
                o[x + plane] = rowbuf[x * sc + 1];
                o[x + 2 * plane] = rowbuf[x * sc + 2];
            }
        } else {
            uint8_t *o = dst + (Py_ssize_t)i * drow;
            if (dc == sc) memcpy(o, rowbuf, (size_t)m);
            else
                for (int x = 0; x < width; x++)
                    for (int c = 0; c < dc; c++) o[x * dc + c] = rowbuf[x * sc + c];
        }
    }
    free(rowbuf);
    free(kv);
    return 1;
}
#define VPASS(...) (vpass_sse2(__VA_ARGS__))
#else
#define VPASS(src, srow, sc, width, y0, cnt, lo, n, k, ks, dst, drow, dc, planes, plane) \
    (acc = malloc(sizeof(int32_t) * (size_t)(width) * (sc)),                              \
     acc ? (vpass(src, srow, sc, width, y0, cnt, lo, n, k, ks, acc, dst, drow, dc, planes, plane), 1) : 0)
#endif

/* Horizontal pass dispatch: SSE2 for 4-byte pixels, scalar otherwise. 0 on allocation failure. */
static int
hpass_any(const uint8_t *src, Py_ssize_t srow, int sc, int nrows, int x0, int cnt, const int *lo,
          const int *n, const int32_t *k, int ks, uint8_t *dst, Py_ssize_t drow, uint8_t *planes,
          Py_ssize_t plane) {
#ifdef HAVE_SSE2
    if (sc == 4) return hpass4(src, srow, nrows, x0, cnt, lo, n, k, ks, dst, drow, 3, planes, plane);
#endif
    hpass(src, srow, sc, nrows, x0, cnt, lo, n, k, ks, dst, drow, planes, plane);
    return 1;
}

static PyObject *
resize_crop(PyObject *self, PyObject *args) {
    PyObject *obj;
    int ow, oh, left, top, cw, ch, filter, vfirst;
    if (!PyArg_ParseTuple(args, "Oiiiiiiip", &obj, &ow, &oh, &left, &top, &cw, &ch, &filter,
                          &vfirst))
        return NULL;
    if (filter != 2 && filter != 3) {
        PyErr_SetString(PyExc_ValueError, "filter must be 2 (BILINEAR) or 3 (BICUBIC)");
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_UINT8, NPY_ARRAY_IN_ARRAY);
    if (!arr) return NULL;
    if (PyArray_NDIM(arr) != 3 || (PyArray_DIM(arr, 2) != 3 && PyArray_DIM(arr, 2) != 4)) {
        Py_DECREF(arr);
        PyErr_SetString(PyExc_ValueError, "src must be HWC uint8 with 3 or 4 channels");
        return NULL;
    }
    int H = (int)PyArray_DIM(arr, 0), W = (int)PyArray_DIM(arr, 1), C = (int)PyArray_DIM(arr, 2);
    if (H < 1 || W < 1 || ow < 1 || oh < 1 || cw < 1 || ch < 1 || left < 0 || top < 0 ||
        left + cw > ow || top + ch > oh) {
        Py_DECREF(arr);
        PyErr_SetString(PyExc_ValueError, "bad sizes: need 0 <= left, left+crop_w <= out_w, ...");
        return NULL;
    }
    npy_intp dims[3] = {3, ch, cw};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_UINT8);
    if (!out) {
        Py_DECREF(arr);
        return NULL;
    }
    const uint8_t *s = (const uint8_t *)PyArray_DATA(arr);
    Py_ssize_t srow = (Py_ssize_t)W * C;
    uint8_t *o = (uint8_t *)PyArray_DATA(out);
    Py_ssize_t plane = (Py_ssize_t)ch * cw;
    int need_h = ow != W, need_v = oh != H;
    int *xlo = NULL, *xn = NULL, *ylo = NULL, *yn = NULL;
    int32_t *xk = NULL, *yk = NULL, *acc = NULL;
    uint8_t *tmp = NULL;
    int xks = 0, yks = 0, fail = 0;

    if (need_h && !(xks = coeffs(W, ow, left, cw, filter, &xlo, &xn, &xk))) fail = 1;
    if (!fail && need_v && !(yks = coeffs(H, oh, top, ch, filter, &ylo, &yn, &yk))) fail = 1;
    if (fail) goto nomem;

    Py_BEGIN_ALLOW_THREADS
    if (!need_h && !need_v) {
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++) {
                const uint8_t *p = s + (Py_ssize_t)(y + top) * srow + (Py_ssize_t)(x + left) * C;
                for (int c = 0; c < 3; c++) o[c * plane + (Py_ssize_t)y * cw + x] = p[c];
            }
    } else if (!need_v) {
        /* horizontal only: rows [top, top+ch) straight into the planes */
        if (!hpass_any(s + (Py_ssize_t)top * srow, srow, C, ch, 0, cw, xlo, xn, xk, xks, NULL, cw, o, plane))
            fail = 1;
    } else if (!need_h) {
        /* vertical only: columns [left, left+cw) */
        if (!VPASS(s + (Py_ssize_t)left * C, srow, C, cw, 0, ch, ylo, yn, yk, yks, NULL, cw, 3, o,
                   plane))
            fail = 1;
    } else if (!vfirst) {
        /* Pillow's horizontal-first: input rows the kept vertical outputs read */
        int r0 = ylo[0], r1 = ylo[0] + yn[0];
        for (int i = 1; i < ch; i++) {
            if (ylo[i] < r0) r0 = ylo[i];
            if (ylo[i] + yn[i] > r1) r1 = ylo[i] + yn[i];
        }
        tmp = malloc((size_t)(r1 - r0) * cw * 3 + 1); /* +1: 4-byte stores of 3-byte pixels */
        if (!tmp) fail = 1;
        else {
            if (!hpass_any(s + (Py_ssize_t)r0 * srow, srow, C, r1 - r0, 0, cw, xlo, xn, xk, xks,
                           tmp, (Py_ssize_t)cw * 3, NULL, 0))
                fail = 1;
            else if (!VPASS(tmp, (Py_ssize_t)cw * 3, 3, cw, r0, ch, ylo, yn, yk, yks, NULL, cw, 3, o,
                            plane))
                fail = 1;
        }
    } else {
        /* Pillow's vertical-first: input columns the kept horizontal outputs read */
        int c0 = xlo[0], c1 = xlo[0] + xn[0];
        for (int i = 1; i < cw; i++) {
            if (xlo[i] < c0) c0 = xlo[i];
            if (xlo[i] + xn[i] > c1) c1 = xlo[i] + xn[i];
        }
        int tw = c1 - c0;
        tmp = malloc((size_t)ch * tw * C); /* C channels: RGBX keeps the SSE2 path */
        if (!tmp) fail = 1;
        else {
            if (!VPASS(s + (Py_ssize_t)c0 * C, srow, C, tw, 0, ch, ylo, yn, yk, yks, tmp,
                       (Py_ssize_t)tw * C, C, NULL, 0) ||
                !hpass_any(tmp, (Py_ssize_t)tw * C, C, ch, c0, cw, xlo, xn, xk, xks, NULL, cw, o,
                           plane))
                fail = 1;
        }
    }
    Py_END_ALLOW_THREADS
    if (fail) goto nomem;
    free(xlo); free(xn); free(xk); free(ylo); free(yn); free(yk); free(tmp); free(acc);
    Py_DECREF(arr);
    return (PyObject *)out;
nomem:
    free(xlo); free(xn); free(xk); free(ylo); free(yn); free(yk); free(tmp); free(acc);
    Py_DECREF(arr);
    Py_DECREF(out);
    return PyErr_NoMemory();
}

static PyMethodDef methods[] = {
    {"resize_crop", resize_crop, METH_VARARGS,
     "resize_crop(src, out_w, out_h, left, top, crop_w, crop_h, filter, vertical_first)\n"
     "-> uint8 (3, crop_h, crop_w): Pillow's 8-bit resize to (out_w, out_h) then crop, "
     "computing only the kept pixels. src: HWC uint8, 3 or 4 channels."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_resample", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__resample(void) {
    import_array();
    return PyModule_Create(&moddef);
}
