// cooperative_groups/reduce.h - reduce() lives in ../cooperative_groups.h in the emulation.
#pragma once
#include <cooperative_groups.h>
