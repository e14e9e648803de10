// Shared argument checks for the coreaug ops. The public Python functions validate
// user input with friendly errors first; these guard the raw torch.ops entry points.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#define COREAUG_CHECK_DIM(x, d) \
  TORCH_CHECK((x).dim() == (d), #x " must have " #d " dimensions, got ", (x).dim())

#define COREAUG_CHECK_DTYPE(x, t) \
  TORCH_CHECK((x).scalar_type() == (t), #x " must be ", (t), ", got ", (x).scalar_type())

#define COREAUG_CHECK_DEVICE(x, dev)                                                 \
  TORCH_CHECK((x).device() == (dev), #x " is on ", (x).device(), " but the op runs on ", \
              (dev))

#define COREAUG_CHECK_FLOATING(x)                                            \
  TORCH_CHECK(at::isFloatingType((x).scalar_type()), #x " must be floating point, got ", \
              (x).scalar_type())
