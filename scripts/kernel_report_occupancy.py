"""The kernel report's theoretical occupancy of a kernel on an H200."""
import math

# H200 (sm_90) as the CUDA occupancy calculator (cuda_occupancy.h) models it: registers are
# allocated per warp in units of 256 from four partitions of 16384, shared memory in units of 128
# bytes with 1 KB reserved by the runtime for each block.
H200 = dict(regs_per_sm=65536, reg_unit=256, partitions=4, max_warps=64, max_blocks=32,
            shared_per_sm=228 * 1024, shared_per_block=227 * 1024, shared_reserved=1024,
            shared_unit=128)


def occupancy(regs, threads, shared):
    """(fraction of the SM's warps, blocks per SM, what limits them) on an H200."""
    h, warps = H200, math.ceil(threads / 32)
    per_warp = math.ceil(max(regs, 1) * 32 / h["reg_unit"]) * h["reg_unit"]
    limits = {"warps": h["max_warps"] // warps, "blocks": h["max_blocks"],
              "registers": h["regs_per_sm"] // h["partitions"] // per_warp * h["partitions"]
              // warps}
    if shared > h["shared_per_block"]:
        limits["shared memory"] = 0
    elif shared:
        unit = h["shared_unit"]
        limits["shared memory"] = h["shared_per_sm"] // (
            math.ceil((shared + h["shared_reserved"]) / unit) * unit)
    limit = min(limits, key=limits.get)
    return limits[limit] * warps / h["max_warps"], limits[limit], limit
