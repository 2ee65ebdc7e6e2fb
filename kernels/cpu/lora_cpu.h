// lora_cpu.h: the CPU backend's multi-adapter LoRA ops (kernels/ops.h, lora_shrink
// and lora_expand).
#ifndef QL_LORA_CPU_H
#define QL_LORA_CPU_H

#include "../ops.h"

void cpu_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in);
void cpu_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out);

#endif
