#pragma once
// Internal to storage/: a prepared statement whose every failure becomes one kvscope::Error
// naming the database file, the SQLite message and the statement. Typed binds only.
#include <cstdint>
#include <string>
#include <string_view>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>

namespace kvscope::sql {

// "<db>: <sqlite message> (in: <statement>)"
[[noreturn]] void rethrow(const std::string& db_path, const SQLite::Exception& e, std::string_view statement);

// Parameterless SQL (schema steps, pragmas, BEGIN/COMMIT).
void exec(SQLite::Database& db, const std::string& db_path, const char* statement);

class Stmt {
 public:
  Stmt(SQLite::Database& db, const std::string& db_path, const char* statement);

  Stmt& bind(int index, int64_t v);
  Stmt& bind(int index, int v) { return bind(index, int64_t{v}); }
  Stmt& bind(int index, double v);   // NaN is stored as NULL by SQLite; real() reads NULL back as NaN
  Stmt& bind(int index, const std::string& v);
  Stmt& bind_null(int index);
  Stmt& bind_text_or_null(int index, const std::string& v);  // empty string -> NULL

  bool step();  // true while there is a row
  void run();   // executes a statement that returns no rows
  void reset(); // ready for new binds (previous binds are kept until rebound)

  bool is_null(int col) const;
  int64_t i64(int col) const;    // NULL -> 0
  double real(int col) const;    // NULL -> NaN (see bind(double))
  std::string text(int col) const;  // NULL -> ""

 private:
  const std::string& path_;
  const char* sql_;
  SQLite::Statement st_;
};

}  // namespace kvscope::sql
