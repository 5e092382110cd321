// pch.h: precompiled header for the LibTorch translation units of calib/ and quant/.
#pragma once
#include <torch/torch.h>
