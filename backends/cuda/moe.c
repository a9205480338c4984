/* Placeholder: being written (CUDA backend issue). */
#include "cu.h"
