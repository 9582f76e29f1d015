// oneDNN 2.6 (Debian: libdnnl-dev), the kernels behind LoupeSegmentation.
// Only Sources/LoupeSegmentation/DNNL/ imports this module.
#include <oneapi/dnnl/dnnl.h>

// DNNL_MEMORY_ALLOCATE is a cast macro, which Swift does not import.
static inline void *loupe_dnnl_memory_allocate(void) { return DNNL_MEMORY_ALLOCATE; }

// Debian builds oneDNN on OpenMP (libgomp): its thread count is OpenMP's.
void omp_set_num_threads(int count);
