// What the CUDA build reports to Python (declared in cuda_info.h, read by ops.cpp's
// cuda_version()): compiled only into CUDA builds, by nvcc, which defines CUDART_VERSION.
#include <cuda_runtime_api.h>

#include "cuda_info.h"

int coreaug_cuda_runtime_version() { return CUDART_VERSION; }
