# data/data.mk - the data pipeline's C++ pieces, included by the top-level Makefile
# (-include data/data.mk). common/tokenizer.h (the decode file the trainers read)
# is tested by dev/unit/test_tokenizer.cpp, built plain and with ASan+UBSan;
# tests/data.sh runs both.

TEST_DEPS += $(BUILD)/test_tokenizer $(BUILD)/test_tokenizer_asan

$(BUILD)/test_tokenizer: dev/unit/test_tokenizer.cpp dev/unit/unit_test.h $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(CXXFLAGS) $< -o $@
$(BUILD)/test_tokenizer_asan: dev/unit/test_tokenizer.cpp dev/unit/unit_test.h $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(SAN_FLAGS) $< -o $@
