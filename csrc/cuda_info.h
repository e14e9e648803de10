// What the CUDA build reports to Python (no CUDA headers: host C++ includes it).
#pragma once

// cuda_info.cu: the CUDA runtime version the kernels were compiled against (e.g. 13000).
int coreaug_cuda_runtime_version();
