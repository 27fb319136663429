# Checkpoints and streaming models in a cluster: tests/integration/ckpt_driver.c and the
# test_ckpt_*.sh scripts (docs/formats.md, "Save and restore in a cluster"). Included from
# tests/CMakeLists.txt; paths are relative to this file.
add_executable(ckpt_driver ${CMAKE_CURRENT_LIST_DIR}/ckpt_driver.c)
target_link_libraries(ckpt_driver PRIVATE ps_itest_util m)
set_target_properties(ckpt_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
foreach(t layout pit corrupt stream crash)
	add_test(NAME test_ckpt_${t} COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_ckpt_${t}.sh
		$<TARGET_FILE:psplus_bin> $<TARGET_FILE:ckpt_driver>
		$<TARGET_FILE:psplus_model> $<TARGET_FILE:psplus_admin>)
	set_tests_properties(test_ckpt_${t} PROPERTIES LABELS integration TIMEOUT 180)
endforeach()
