// The one place where every coreaug op's schema is defined; CPU bodies live in
// *_cpu.cpp, CUDA bodies in *_cuda.cu, each registering with TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

#ifdef COREAUG_WITH_CUDA
// Defined in a .cu file: host C++ here never includes CUDA headers, whose folder the
// host compiler may not know.
int coreaug_cuda_runtime_version();
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(coreaug, m) {
  // softmax(logits) - onehot(targets): float32 (N, C). Targets must lie in [0, C).
  m.def("gradient_embeddings(Tensor logits, Tensor targets) -> Tensor");
  // Greedy facility location per class over rows grouped by class: x (N, D) float32 (or the
  // factored pair x (N, C), features (N, d)), offsets (K+1,) int64 class starts, budgets (K,)
  // int64 picks per class summing to total. similarity 0/1/2 = distance/sqdistance/exp,
  // optimizer 0/1/2 = naive/lazy/stochastic. Returns (rows (total,) int64 into x, gains
  // (total,) float32, assignment (N,) int64 output position of each row's representative).
  m.def("facility_location(Tensor x, Tensor? features, Tensor offsets, Tensor budgets, int total, "
        "int similarity, int optimizer, float epsilon, int seed, int max_matrix_bytes) "
        "-> (Tensor, Tensor, Tensor)");
}

// The Python module only reports how it was built; importing it registers the ops above.
namespace {

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
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "coreaug_fast compiled ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
