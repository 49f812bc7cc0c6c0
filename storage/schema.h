#pragma once
// The run store's schema: a forward-only list of migrations, migration N taking PRAGMA
// user_version from N-1 to N. A released step is never edited; changes append a new step.
#include <string>

namespace SQLite {
class Database;
}

namespace kvscope {

inline constexpr int kSchemaVersion = 5;           // the version this build writes
inline constexpr int kApplicationId = 0x4B565343;  // "KVSC" in PRAGMA application_id

// Brings `db` from its user_version up to `target` (default: kSchemaVersion), each step in its own
// transaction. Errors (future version, not a kvscope database, SQLite failures) name `db_path`.
void migrate_schema(SQLite::Database& db, const std::string& db_path, int target = kSchemaVersion);

// Validates that `db` is a kvscope database (or empty) no newer than this build and returns its
// user_version; errors name `db_path`.
int checked_schema_version(SQLite::Database& db, const std::string& db_path);

// PRAGMA user_version of an open database.
int schema_version_of(SQLite::Database& db, const std::string& db_path);

}  // namespace kvscope
