# Corpus replay in the normal tree (gcc, or the sanitizer tree with
# -DQLORA_SANITIZE=ON): each harness compiled without libFuzzer, with
# replay_main.c, runs over every file of its committed corpus (label cpu).
include(${CMAKE_CURRENT_LIST_DIR}/harnesses.cmake)
foreach(h ${QLORA_FUZZ_HARNESSES})
  add_executable(replay_${h} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${h}.c ${CMAKE_CURRENT_LIST_DIR}/replay_main.c)
  target_link_libraries(replay_${h} PRIVATE qlora_lib)
  target_compile_definitions(replay_${h} PRIVATE QL_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  add_test(NAME fuzz_replay_${h} COMMAND replay_${h} ${CMAKE_CURRENT_LIST_DIR}/corpus/${h})
  set_tests_properties(fuzz_replay_${h} PROPERTIES LABELS cpu TIMEOUT 300)
endforeach()
