// Reproduces tract 0.23.9's AVX2 int8 kernel collapse (docs/performance.md, "AVX2 without AVX-512"):
// the k-step body of linalg/x86_64/fma/avx2_mmm_i32_8x8.S.j2, with its legacy-SSE `movq` load and
// with `vmovq`. Build and run: gcc -O2 tract-avx2-movq.c -o repro && ./repro
#include <stdio.h>
#include <time.h>
#include <stdint.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int8_t A[8*4096] __attribute__((aligned(64))), B[8*4096] __attribute__((aligned(64)));
#define LOOP(LOADA) \
  "1:\n" LOADA "\n" \
  "vpmovsxbw %%xmm8,%%ymm8\n" \
  "vpbroadcastb (%%rbx),%%ymm9\n vpbroadcastb 1(%%rbx),%%ymm10\n vpbroadcastb 2(%%rbx),%%ymm11\n vpbroadcastb 3(%%rbx),%%ymm12\n" \
  "vpmovsxbw %%xmm9,%%ymm9\n vpmovsxbw %%xmm10,%%ymm10\n vpmovsxbw %%xmm11,%%ymm11\n vpmovsxbw %%xmm12,%%ymm12\n" \
  "vpmullw %%ymm8,%%ymm9,%%ymm9\n vpmullw %%ymm8,%%ymm10,%%ymm10\n vpmullw %%ymm8,%%ymm11,%%ymm11\n vpmullw %%ymm8,%%ymm12,%%ymm12\n" \
  "vpmovsxwd %%xmm9,%%ymm9\n vpmovsxwd %%xmm10,%%ymm10\n vpmovsxwd %%xmm11,%%ymm11\n vpmovsxwd %%xmm12,%%ymm12\n" \
  "vpaddd %%ymm9,%%ymm0,%%ymm0\n vpaddd %%ymm10,%%ymm1,%%ymm1\n vpaddd %%ymm11,%%ymm2,%%ymm2\n vpaddd %%ymm12,%%ymm3,%%ymm3\n" \
  "add $8,%%rax\n add $8,%%rbx\n dec %%rcx\n jnz 1b\n"
static double run(int vex){
  double best=1e9;
  for(int r=0;r<5;r++){
    double t=now();
    for(int rep=0;rep<2000;rep++){
      const int8_t*a=A,*b=B; long k=4096;
      if(vex) __asm__ volatile("vpxor %%ymm0,%%ymm0,%%ymm0\n" LOOP("vmovq (%%rax),%%xmm8") "vzeroupper" : "+a"(a),"+b"(b),"+c"(k) :: "memory","xmm0","xmm1","xmm2","xmm3","xmm8","xmm9","xmm10","xmm11","xmm12");
      else __asm__ volatile("vpxor %%ymm0,%%ymm0,%%ymm0\n" LOOP("movq (%%rax),%%xmm8") "vzeroupper" : "+a"(a),"+b"(b),"+c"(k) :: "memory","xmm0","xmm1","xmm2","xmm3","xmm8","xmm9","xmm10","xmm11","xmm12");
    }
    double dt=now()-t; if(dt<best)best=dt;
  }
  return best/(2000.0*4096);
}
int main(){
  double s=run(0), v=run(1);
  printf("half of tract's avx2 i8i8 k-step (32 MACs): movq (SSE) %.1f ns, vmovq (VEX) %.2f ns: %.0fx\n", s*1e9, v*1e9, s/v);
}
