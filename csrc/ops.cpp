// The one place where every coreaug op's schema is defined; CPU bodies live in
// *_cpu.cpp, CUDA bodies in *_cuda.cu, each registering with TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

#include "facility_location.h"

#ifdef COREAUG_WITH_CUDA
// Host C++ here never includes CUDA headers, whose folder the host compiler may not know.
#include "cuda_info.h"
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(coreaug, m) {
  // softmax(logits) - onehot(targets): float32 (N, C). Targets must lie in [0, C).
  m.def("gradient_embeddings(Tensor logits, Tensor targets) -> Tensor");
  // Greedy facility location per class over rows grouped by class: x (N, D) float32 (or the
  // factored pair x (N, C), features (N, d)), offsets (K+1,) int64 class starts, budgets (K,)
  // int64 picks per class summing to total. similarity and optimizer are integer codes: the
  // name's position in coreaug_fast.vocabulary.SIMILARITIES ("distance", "sqdistance",
  // "exp") and OPTIMIZERS ("naive", "lazy", "stochastic"); see facility_location.h. Returns
  // (rows (total,) int64 into x, gains (total,) float32, assignment (N,) int64 output
  // position of each row's representative).
  m.def("facility_location(Tensor x, Tensor? features, Tensor offsets, Tensor budgets, int total, "
        "int similarity, int optimizer, float epsilon, int seed, int max_matrix_bytes) "
        "-> (Tensor, Tensor, Tensor)");
  // The rows one run of the selector compares, written into out (R, D) float32 contiguous:
  // row r is source[rows[r]] as float32, or softmax(source[rows[r]]) − onehot(targets[rows[r]])
  // (gradient_embeddings' bits) when targets (N,) int64 is given; the R rows are grouped by
  // class, counts (K,) int64 CPU rows per class. Then per class, with centre, rows minus
  // their class mean (segment_reduce's: the float running sum in row order over n_c); with
  // scale, rows times the power of two that brings the class's largest |entry| into
  // [0.5, 1) (1 for an all-zero class). Returns the (K,) float32 factors (ones without
  // scale). source (N, D) floating with unit column stride; rows (R,) int64 in [0, N).
  // CPU only: CUDA tensors take the torch composite it matches bit for bit
  // (coreaug_fast.selection.class_rows).
  m.def("class_rows_(Tensor(a!) out, Tensor source, Tensor? targets, Tensor rows, Tensor counts, bool centre, "
        "bool scale) -> Tensor");
  // Per-row weighted cross-entropy: loss[i] = weights[i] · CE(logits[i], targets[i]) with
  // F.cross_entropy's label smoothing, (N,) float32 (float64 for float64 logits), and
  // lse[i] = logsumexp(logits[i]), (N,) float64: 8 bytes a row buy float32-accurate
  // softmax values in the backward even for logits far from 0. The op stops at per-row
  // losses: "sum"/"mean" are one N-element reduction on top (negligible next to the N×C
  // pass), so every reduction runs the same kernels and "none" with an arbitrary upstream
  // gradient needs no special case. Targets must lie in [0, C) (CPU: error; CUDA: NaN row,
  // since a kernel cannot raise; the public function checks first). weights (None for
  // ones) are float32/float64 like the losses.
  m.def("weighted_cross_entropy(Tensor logits, Tensor targets, Tensor? weights, float label_smoothing) -> (Tensor loss, Tensor lse)");
  // d(Σ grad_loss[i]·loss[i]) / d logits = grad_loss[i]·weights[i]·(softmax(logits[i]) − q_i),
  // q_i the smoothed one-hot target; the softmax is recomputed from logits and the saved lse,
  // so the only N×C buffer is the result (logits' dtype, contiguous).
  m.def("weighted_cross_entropy_backward(Tensor grad_loss, Tensor logits, Tensor targets, Tensor? weights, Tensor lse, float label_smoothing) -> Tensor");
  // Fused augmentation (coreaug_fast.augment): images uint8 (N, C, H, W), ops int32 (M, L),
  // magnitudes float32 (M, L), index int64 (M,) or None, crop int64 (M, 3) = (top, left,
  // flip) in the zero-padded image or None, fill 1 or C values. Returns (M, C, H, W): uint8
  // when out_dtype is None/uint8, else (x/255 - mean)/std in out_dtype.
  m.def(
      "augment(Tensor images, Tensor ops, Tensor magnitudes, Tensor? index, Tensor? crop, "
      "int padding, int[] fill, ScalarType? out_dtype, float[]? mean, float[]? std) -> Tensor");
}

// The Python module only reports how it was built and what its integer codes mean;
// importing it registers the ops above.
namespace {

template <size_t N>
PyObject* name_tuple(const char* const (&names)[N]) {
  PyObject* out = PyTuple_New(N);
  for (size_t i = 0; i < N; ++i) PyTuple_SET_ITEM(out, i, PyUnicode_FromString(names[i]));
  return out;
}

PyObject* codes(PyObject*, PyObject*) {
  PyObject* similarities = name_tuple(coreaug::kSimilarityNames);
  PyObject* optimizers = name_tuple(coreaug::kOptimizerNames);
  PyObject* out = Py_BuildValue("{s:O,s:O}", "SIMILARITIES", similarities, "OPTIMIZERS", optimizers);
  Py_DECREF(similarities);
  Py_DECREF(optimizers);
  return out;
}

PyObject* cuda_version(PyObject*, PyObject*) {
#ifdef COREAUG_WITH_CUDA
  return PyLong_FromLong(coreaug_cuda_runtime_version());
#else
  return PyLong_FromLong(0);
#endif
}

PyObject* openmp(PyObject*, PyObject*) {
#ifdef _OPENMP
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cuda_version", cuda_version, METH_NOARGS,
     "CUDA runtime version the CUDA kernels were compiled against (e.g. 13000), 0 if none."},
    {"openmp", openmp, METH_NOARGS, "Whether the CPU kernels were compiled with OpenMP."},
    {"codes", codes, METH_NOARGS,
     "The names the compiled ops give their integer codes, in code order: "
     "{'SIMILARITIES': (...), 'OPTIMIZERS': (...)}, as coreaug_fast.vocabulary must list them."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "coreaug_fast compiled ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
