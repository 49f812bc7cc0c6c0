// Layer/head lists typed by the user.
#include <catch2/catch.hpp>

#include "views/index_list.h"

using kvscope::views::parse_index_list;

TEST_CASE("index lists: numbers, ranges, spaces, duplicates") {
  CHECK(parse_index_list("", 24) == std::vector<int>{});
  CHECK(parse_index_list("8", 24) == std::vector<int>{8});
  CHECK(parse_index_list(" 0-3, 8 ,2", 24) == std::vector<int>{0, 1, 2, 3, 8});
  CHECK(parse_index_list("23", 24) == std::vector<int>{23});
}

TEST_CASE("index lists: bad text is rejected, never half-read") {
  CHECK(!parse_index_list("24", 24));        // out of range
  CHECK(!parse_index_list("3-1", 24));       // backwards range
  CHECK(!parse_index_list("1,,2", 24));
  CHECK(!parse_index_list("1,", 24));
  CHECK(!parse_index_list("-1", 24));
  CHECK(!parse_index_list("a", 24));
  CHECK(!parse_index_list("1 2", 24));
  CHECK(!parse_index_list("99999999999999999999", 24));
}
