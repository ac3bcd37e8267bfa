# Installs the build in BUILD_DIR under WORK_DIR/prefix and runs the installed `fusedloss validate`
# from WORK_DIR, which holds no build or source tree: it must pass, and its golden checks must
# read the installed golden files (the first line names the folder). Run with cmake -P.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${WORK_DIR}/prefix/bin/fusedloss validate --device cpu
                WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed fusedloss validate failed (${rc}):\n${out}")
endif()
string(FIND "${out}" "golden ${WORK_DIR}/prefix/share/fusedloss/golden" at)
if(at EQUAL -1)
  string(SUBSTRING "${out}" 0 300 head)
  message(FATAL_ERROR "the installed tool did not read the installed golden files:\n${head}")
endif()
