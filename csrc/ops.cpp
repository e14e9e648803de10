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
  // Fused augmentation (coreaug_fast.augment): images uint8 (N, C, H, W), ops int32 (M, L),
  // magnitudes float32 (M, L), index int64 (M,) or None, crop int64 (M, 3) = (top, left,
  // flip) in the zero-padded image or None, fill 1 or C values. Returns (M, C, H, W): uint8
  // when out_dtype is None/uint8, else (x/255 - mean)/std in out_dtype.
  m.def(
      "augment(Tensor images, Tensor ops, Tensor magnitudes, Tensor? index, Tensor? crop, "
      "int padding, int[] fill, ScalarType? out_dtype, float[]? mean, float[]? std) -> Tensor");
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
