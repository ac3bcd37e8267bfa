# Route compilations through ccache when it is installed: nvcc on two cores is slow, and CI and
# developers rebuild the same sources often.
find_program(FUSEDLOSS_CCACHE ccache)
if(FUSEDLOSS_CCACHE)
  foreach(lang C CXX CUDA)
    if(NOT DEFINED CMAKE_${lang}_COMPILER_LAUNCHER)
      set(CMAKE_${lang}_COMPILER_LAUNCHER ${FUSEDLOSS_CCACHE})
    endif()
  endforeach()
endif()
