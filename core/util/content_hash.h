#pragma once
// Content identity of dumps, policies and sweep cells: 64-bit FNV-1a over the bytes, written
// "fnv1a64:<16 lowercase hex digits>". Not cryptographic: it tells identical files apart from
// different ones in one user's runs, where 64 bits make an accidental collision negligible.
#include <cstdint>
#include <string>
#include <string_view>

namespace kvscope {

uint64_t fnv1a64(std::string_view bytes, uint64_t state = 0xcbf29ce484222325ull);
std::string hash_text(std::string_view bytes);        // "fnv1a64:..."
std::string hash_file(const std::string& path);       // "fnv1a64:..." of the whole file; Error naming it

}  // namespace kvscope
