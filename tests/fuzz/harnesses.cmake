# The harnesses of tests/fuzz: each is fuzz_<name>.c with a corpus in corpus/<name>/
# and, where one helps, a dictionary <name>.dict. Shared by the fuzz tree
# (tests/fuzz/CMakeLists.txt, clang + libFuzzer) and the replay tests of the
# normal tree (tests/CMakeLists.txt).
set(QLORA_FUZZ_HARNESSES
  safetensors st_index config generation_config tokenizer_config adapter
  dataset requests qlb tokenizer_json openai recipe checkpoint)
