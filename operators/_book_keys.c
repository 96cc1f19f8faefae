/* The order book's price -> key step and its search, in C (operators/orderbook.py uses it when built).
 *
 * Why C (benchmarks/RESULTS.md, issue 15, session 11): with hundreds of books a book is cold in the CPU caches
 * when its next update comes, and each changed level's key lookup touched ~4 scattered objects (a per-book
 * dict from price text to key, its key string, the key's int object, the bisect's int objects). Here the key
 * is read from the price text directly and searched in the side's contiguous int64 keys (an array('q')):
 * no objects touched but the text and the array. Pure: no state, no I/O, no allocation but the result.
 *
 * key(price, scale, sign) -> int | None
 *     The price text as an integer at `scale` decimals, times `sign`; None when the text is not a plain ASCII
 *     decimal (digits, at most one '.', at least one digit) of at most MAX_PRICE_CHARS characters, has more
 *     than `scale` decimals, or its key does not fit 63 bits: the caller's exact Python path then decides
 *     (rescale, refuse, or a wide key). Never a key where that path would refuse the text.
 * locate(keys, price, scale, sign) -> int | None
 *     keys: an array('q') in ascending order. r >= 0: the key is at r; r < 0: absent, it belongs at -r - 1;
 *     None: as for key().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_PRICE_CHARS 40 /* operators/orderbook.py's: a longer price is junk */

static int parse_key(PyObject *price, long scale, int64_t *out) {
    if (!PyUnicode_Check(price) || !PyUnicode_IS_ASCII(price)) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(price);
    const char *s = (const char *)PyUnicode_DATA(price);
    if (n > MAX_PRICE_CHARS) return -1;
    int64_t v = 0;
    long decimals = -1;  /* -1: no '.' seen yet */
    int digits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            int d = c - '0';
            if (v > (INT64_MAX - d) / 10) return -1;
            v = v * 10 + d;
            digits++;
            if (decimals >= 0) decimals++;
        } else if (c == '.' && decimals < 0) {
            decimals = 0;
        } else {
            return -1;
        }
    }
    if (digits == 0) return -1;
    if (decimals < 0) decimals = 0;
    if (decimals > scale) return -1;
    for (long k = decimals; k < scale; k++) {
        if (v > INT64_MAX / 10) return -1;
        v *= 10;
    }
    *out = v;
    return 0;
}

/* The key of `price` at `scale` decimals times `sign` (Python ints): 1 with *out set, 0 declined (None to the
   caller), -1 with an exception set. */
static int signed_key(PyObject *price, PyObject *scale_obj, PyObject *sign_obj, int64_t *out) {
    long scale = PyLong_AsLong(scale_obj);
    long sign = PyLong_AsLong(sign_obj);
    if ((scale == -1 || sign == -1) && PyErr_Occurred()) return -1;
    if (sign != 1 && sign != -1) {
        PyErr_SetString(PyExc_ValueError, "sign must be 1 or -1");
        return -1;
    }
    if (parse_key(price, scale, out) < 0) return 0;
    *out *= sign;
    return 1;
}

static int arity(Py_ssize_t nargs, Py_ssize_t want, const char *usage) {
    if (nargs == want) return 0;
    PyErr_SetString(PyExc_TypeError, usage);
    return -1;
}

static PyObject *key(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t k;
    if (arity(nargs, 3, "key(price, scale, sign)") < 0) return NULL;
    int got = signed_key(args[0], args[1], args[2], &k);
    if (got <= 0) return got < 0 ? NULL : Py_NewRef(Py_None);
    return PyLong_FromLongLong(k);
}

static PyObject *locate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t k;
    Py_buffer view;
    if (arity(nargs, 4, "locate(keys, price, scale, sign)") < 0) return NULL;
    int got = signed_key(args[1], args[2], args[3], &k);
    if (got <= 0) return got < 0 ? NULL : Py_NewRef(Py_None);
    if (PyObject_GetBuffer(args[0], &view, PyBUF_FORMAT) < 0) return NULL;
    if (view.itemsize != 8 || view.format == NULL || strcmp(view.format, "q") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "keys must be an array('q')");
        return NULL;
    }
    const int64_t *a = (const int64_t *)view.buf;
    Py_ssize_t lo = 0, hi = view.len / 8, n = hi;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (a[mid] < k) lo = mid + 1;
        else hi = mid;
    }
    int found = lo < n && a[lo] == k;
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(found ? lo : -lo - 1);
}

static PyMethodDef methods[] = {
    {"key", (PyCFunction)(void (*)(void))key, METH_FASTCALL, "The price text's key at scale decimals, or None."},
    {"locate", (PyCFunction)(void (*)(void))locate, METH_FASTCALL,
     "Where the price's key is (r >= 0) or belongs (-r - 1) in an ascending array('q'), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "operators._book_keys", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__book_keys(void) { return PyModule_Create(&module); }
