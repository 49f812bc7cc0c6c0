#include "storage/sql.h"

#include <limits>

#include "core/util/error.h"

namespace kvscope::sql {

void rethrow(const std::string& db_path, const SQLite::Exception& e, std::string_view statement) {
  std::string msg = db_path + ": " + e.what();
  if (!statement.empty()) msg += " (in: " + std::string(statement) + ")";
  throw Error(msg);
}

void exec(SQLite::Database& db, const std::string& db_path, const char* statement) {
  try {
    db.exec(statement);
  } catch (const SQLite::Exception& e) {
    rethrow(db_path, e, statement);
  }
}

namespace {
SQLite::Statement prepare(SQLite::Database& db, const std::string& db_path, const char* statement) {
  try {
    return SQLite::Statement(db, statement);
  } catch (const SQLite::Exception& e) {
    rethrow(db_path, e, statement);
  }
}
}  // namespace

Stmt::Stmt(SQLite::Database& db, const std::string& db_path, const char* statement)
    : path_(db_path), sql_(statement), st_(prepare(db, db_path, statement)) {}

#define KVSCOPE_SQL_GUARD(expr)         \
  try {                                 \
    expr;                               \
  } catch (const SQLite::Exception& e) { \
    rethrow(path_, e, sql_);            \
  }

Stmt& Stmt::bind(int index, int64_t v) {
  KVSCOPE_SQL_GUARD(st_.bind(index, v));
  return *this;
}
Stmt& Stmt::bind(int index, double v) {
  KVSCOPE_SQL_GUARD(st_.bind(index, v));
  return *this;
}
Stmt& Stmt::bind(int index, const std::string& v) {
  KVSCOPE_SQL_GUARD(st_.bind(index, v));
  return *this;
}
Stmt& Stmt::bind_null(int index) {
  KVSCOPE_SQL_GUARD(st_.bind(index));
  return *this;
}
Stmt& Stmt::bind_text_or_null(int index, const std::string& v) { return v.empty() ? bind_null(index) : bind(index, v); }

bool Stmt::step() {
  KVSCOPE_SQL_GUARD(return st_.executeStep());
}
void Stmt::run() {
  KVSCOPE_SQL_GUARD(while (st_.executeStep()) {});
}
void Stmt::reset() { KVSCOPE_SQL_GUARD(st_.reset()); }

bool Stmt::is_null(int col) const { KVSCOPE_SQL_GUARD(return st_.getColumn(col).isNull()); }
int64_t Stmt::i64(int col) const { KVSCOPE_SQL_GUARD(return st_.getColumn(col).getInt64()); }
double Stmt::real(int col) const {
  KVSCOPE_SQL_GUARD(
      const auto c = st_.getColumn(col);
      return c.isNull() ? std::numeric_limits<double>::quiet_NaN() : c.getDouble());
}
std::string Stmt::text(int col) const { KVSCOPE_SQL_GUARD(return st_.getColumn(col).getString()); }

#undef KVSCOPE_SQL_GUARD

}  // namespace kvscope::sql
