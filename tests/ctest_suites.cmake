# Included by CTest (a TEST_INCLUDE_FILES script, see tests/CMakeLists.txt): one CTest test per
# GoogleTest suite of `executable`, found by asking it when CTest runs. Each test runs its suite's
# cases in one process; gtest still reports every case by name.
execute_process(COMMAND "${executable}" --gtest_list_tests OUTPUT_VARIABLE listing
                RESULT_VARIABLE status ERROR_VARIABLE errors)
if(NOT status EQUAL 0)
  add_test("${prefix}listing_failed" "${CMAKE_COMMAND}" -E echo
           "${executable} --gtest_list_tests failed (${status}): ${errors}")
  set_tests_properties("${prefix}listing_failed" PROPERTIES WILL_FAIL TRUE LABELS "${labels}")
  return()
endif()
string(REPLACE "\n" ";" lines "${listing}")
foreach(line IN LISTS lines)
  # A suite's line starts in the first column and ends with its name's dot; its cases are indented.
  if(line MATCHES "^([A-Za-z_][A-Za-z0-9_/]*)\\.")
    set(suite "${CMAKE_MATCH_1}")
    add_test("${prefix}${suite}" "${executable}" "--gtest_filter=${suite}.*")
    set_tests_properties("${prefix}${suite}" PROPERTIES LABELS "${labels}")
  endif()
endforeach()
