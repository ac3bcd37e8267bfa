# The GPU check as an installable suite, for a GPU machine that has neither GoogleTest nor Google
# Benchmark: `cmake --install <build> --component gpu_check --prefix DIR` puts the test and
# benchmark binaries, the shared libraries they need beyond the system's and the CUDA toolkit's,
# and a CTest file (tests/gpu-check/CTestTestfile.cmake.in) into DIR; there
# `ctest --test-dir DIR/share/fusedloss/gpu-check -L <label>` runs them (scripts/gpu-check.sh
# does). The rules are EXCLUDE_FROM_ALL: a plain `cmake --install` leaves them out.
set(fusedloss_check_targets fusedloss_tests fusedloss_c_abi_test fusedloss_gpu_tests
                            fusedloss_gpu_slow_tests fusedloss_bench)
foreach(target IN LISTS fusedloss_check_targets ITEMS fusedloss_cli)
  if(NOT TARGET ${target})
    message(STATUS "fusedloss: no gpu_check install component (${target} is not built)")
    return()
  endif()
endforeach()

# What the sanitizer tools run: a set that reaches every kernel and every tier once at small sizes
# (FUSEDLOSS_TEST_SIZE_SCALE shrinks what is large in it). The element kernels: every loss and call,
# the sizes around their chunks, the element-by-element path and in place; the bfloat16 lookup
# kernel (its shared-memory table filled and read) at the table's edges. The row kernels: every
# tier forced (warp, block, cluster, two_pass, spatial, with class weights and label smoothing, the
# forward alone, the backward from a saved LSE, softmax focal, probability targets), in place on
# every layout, a NaN alone in a thread's share; scale_in_place; the memory-space checks.
set(FUSEDLOSS_CHECK_SANITIZER_FILTER
    "ElementKernels/*.EveryCall:ElementKernels/bfloat16.SizesThatBreakKernels:ElementKernels/float32.ScalarPathAndInPlace:ElementLookup.TableEdgesInfinitiesAndNaN:ElementLookup.SaturatedLogitsAndHardTargets:RowKernels/bfloat16.EveryTierForced:RowKernels/float32.InPlaceGradient:RowKernels/float16.NanLogitAloneInAThreadsShare:ScaleInPlaceGpu.*:MemorySpace.*:ElementKernelsBadInput.*"
    CACHE STRING "The GPU tests (a --gtest_filter) that the gpu_check suite runs under each sanitizer")
# The headline benchmark rows: the copy reference, the fused element losses at 2^28 elements, and
# cross-entropy at the LLM head's shape and at small class counts, every scenario and forced tier.
set(FUSEDLOSS_CHECK_BENCH_FILTER
    "^copy|^(bce|sigmoid_focal|mse)/bfloat16/forward_backward/|^cross_entropy[a-z_]*/bfloat16/[a-z_]+/(8192x128256|1024x1000|262144x1024)"
    CACHE STRING "The benchmark rows (a --benchmark_filter) that the gpu_check suite runs")

set(fusedloss_check_bin ${CMAKE_INSTALL_LIBEXECDIR}/fusedloss)
set(fusedloss_check_lib ${CMAKE_INSTALL_LIBEXECDIR}/fusedloss/lib)
set(fusedloss_check_dir ${CMAKE_INSTALL_DATADIR}/fusedloss/gpu-check)
install(TARGETS ${fusedloss_check_targets} RUNTIME_DEPENDENCY_SET fusedloss_check_runtime
        RUNTIME DESTINATION ${fusedloss_check_bin} COMPONENT gpu_check EXCLUDE_FROM_ALL)
# Left out: the C and C++ runtimes every Linux has, the driver's libcuda, the CUDA toolkit's NCCL
# and cuBLAS (200 and 540 MB; a GPU machine's toolkit has them) and the project's own libraries,
# which the plain install puts in lib/.
install(RUNTIME_DEPENDENCY_SET fusedloss_check_runtime
        PRE_EXCLUDE_REGEXES
          "^(linux-vdso|ld-linux|libc|libm|libstdc\\+\\+|libgcc_s|libpthread|libdl|librt)[.-]"
          "^(libcuda|libnccl|libcublas|libcublasLt|libfusedloss[a-z_]*)[.-]"
        DIRECTORIES ${CUDAToolkit_LIBRARY_DIR}
        LIBRARY DESTINATION ${fusedloss_check_lib} COMPONENT gpu_check EXCLUDE_FROM_ALL)

file(RELATIVE_PATH fusedloss_check_to_prefix /prefix/${fusedloss_check_dir} /prefix)
configure_file(${PROJECT_SOURCE_DIR}/tests/gpu-check/CTestTestfile.cmake.in
               ${PROJECT_BINARY_DIR}/gpu-check/CTestTestfile.cmake @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/gpu-check/CTestTestfile.cmake
        DESTINATION ${fusedloss_check_dir} COMPONENT gpu_check EXCLUDE_FROM_ALL)
