# CTest's fuzz_c_abi: runs FUZZER for at most SECONDS seconds and RUNS inputs on a copy of the seed
# corpus CORPUS made in WORK_DIR, which also keeps the fuzzer's log and the input of a failure
# (crash-*, timeout-*). Prints the final statistics, or the log's end on a failure.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/corpus")
file(GLOB seeds "${CORPUS}/*")
file(COPY ${seeds} DESTINATION "${WORK_DIR}/corpus")
execute_process(COMMAND "${FUZZER}" -max_total_time=${SECONDS} -runs=${RUNS} -timeout=30
                        -print_final_stats=1 "-artifact_prefix=${WORK_DIR}/" "${WORK_DIR}/corpus"
                OUTPUT_FILE "${WORK_DIR}/fuzz.log" ERROR_FILE "${WORK_DIR}/fuzz.log"
                RESULT_VARIABLE status)
# The log is read as a string: its lines hold brackets and semicolons that CMake lists mangle.
file(READ "${WORK_DIR}/fuzz.log" log)
if(NOT status EQUAL 0)
  string(LENGTH "${log}" length)
  set(start 0)
  if(length GREATER 8000)
    math(EXPR start "${length} - 8000")
  endif()
  string(SUBSTRING "${log}" ${start} -1 tail)
  message(FATAL_ERROR "${tail}\nfuzz_c_abi failed (${status}); its log is ${WORK_DIR}/fuzz.log; "
                      "replay the input with ${FUZZER} ${WORK_DIR}/crash-...")
endif()
string(REGEX MATCHALL "#[0-9]+[ \t]+DONE[^\n]*|stat::[^\n]*" stats "${log}")
string(REPLACE ";" "\n" stats "${stats}")
message(STATUS "fuzz_c_abi:\n${stats}")
