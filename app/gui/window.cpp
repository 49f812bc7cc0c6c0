#include "app/gui/window.h"

#include <GLFW/glfw3.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/util/error.h"

namespace kvscope::gui {

namespace {

constexpr const char* kFontPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

// Time of the last user input (GLFW callbacks, main thread only): drives idle throttling.
double g_last_input = 0;

}  // namespace

void Window::note_input() { g_last_input = glfwGetTime(); }

Window::Window(int w, int h, const std::string& ini_path) : ini_path_(ini_path) {
  glfwSetErrorCallback([](int code, const char* msg) { std::fprintf(stderr, "kvscope: glfw error %d: %s\n", code, msg); });
  if (!glfwInit()) throw Error("gui: cannot initialise GLFW (is there a display? try xvfb-run)");
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  window_ = glfwCreateWindow(w, h, "kvscope", nullptr, nullptr);
  if (!window_) {
    glfwTerminate();
    throw Error("gui: cannot create an OpenGL 3.0 window (is there a display? try xvfb-run)");
  }
  glfwMakeContextCurrent(window_);
  glfwSwapInterval(1);
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = ini_path_.c_str();
  // Installed before ImGui's backend, which chains to them.
  glfwSetCursorPosCallback(window_, [](GLFWwindow*, double, double) { note_input(); });
  glfwSetMouseButtonCallback(window_, [](GLFWwindow*, int, int, int) { note_input(); });
  glfwSetScrollCallback(window_, [](GLFWwindow*, double, double) { note_input(); });
  glfwSetKeyCallback(window_, [](GLFWwindow*, int, int, int, int) { note_input(); });
  glfwSetCharCallback(window_, [](GLFWwindow*, unsigned) { note_input(); });
  glfwSetWindowSizeCallback(window_, [](GLFWwindow*, int, int) { note_input(); });
  glfwSetWindowFocusCallback(window_, [](GLFWwindow*, int) { note_input(); });
  ImGui_ImplGlfw_InitForOpenGL(window_, true);
  ImGui_ImplOpenGL3_Init("#version 130");
}

Window::~Window() {
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window_);
  glfwTerminate();
}

void Window::apply_style(bool dark, float ui_scale) {
  ImGuiStyle fresh;
  ImGui::GetStyle() = fresh;
  if (dark) ImGui::StyleColorsDark();
  else ImGui::StyleColorsLight();
  ImGuiStyle& st = ImGui::GetStyle();
  st.WindowRounding = 0;
  st.FrameRounding = 3;
  st.ScaleAllSizes(ui_scale);
  ui_scale_ = ui_scale;
  fonts_dirty_ = true;
}

void Window::rebuild_fonts() {
  ImGuiIO& io = ImGui::GetIO();
  io.Fonts->Clear();
  float px = std::round(15.0f * ui_scale_);
  if (std::filesystem::exists(kFontPath)) io.Fonts->AddFontFromFileTTF(kFontPath, px);
  else {
    ImFontConfig cfg;
    cfg.SizePixels = px;
    io.Fonts->AddFontDefault(&cfg);
  }
  ImGui_ImplOpenGL3_DestroyFontsTexture();
  ImGui_ImplOpenGL3_CreateFontsTexture();
  fonts_dirty_ = false;
}

bool Window::should_close() const { return glfwWindowShouldClose(window_); }
void Window::request_close() { glfwSetWindowShouldClose(window_, 1); }
void Window::size(int* w, int* h) const { glfwGetWindowSize(window_, w, h); }
void Window::framebuffer_size(int* w, int* h) const { glfwGetFramebufferSize(window_, w, h); }
double Window::seconds_since_input() const { return glfwGetTime() - g_last_input; }

void Window::wait_events(bool idle) {
  if (idle) glfwWaitEventsTimeout(0.5);
  else glfwPollEvents();
  if (fonts_dirty_) rebuild_fonts();
}

void Window::begin_frame(bool scripted_mouse, std::optional<ImVec2> mouse_pos, int mouse_button) {
  ImGui_ImplOpenGL3_NewFrame();
  ImGui_ImplGlfw_NewFrame();
  if (scripted_mouse) {
    // Scripted runs own the mouse: the real cursor must not disturb screenshots.
    ImGuiIO& io = ImGui::GetIO();
    io.MousePos = mouse_pos ? *mouse_pos : ImVec2(-FLT_MAX, -FLT_MAX);
    for (int b = 0; b < 3; ++b) io.MouseDown[b] = b == mouse_button;
  }
  ImGui::NewFrame();
}

void Window::end_frame() {
  int fw, fh;
  glfwGetFramebufferSize(window_, &fw, &fh);
  glViewport(0, 0, fw, fh);
  ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
  glClearColor(bg.x, bg.y, bg.z, 1);
  glClear(GL_COLOR_BUFFER_BIT);
  ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
}

void Window::swap() { glfwSwapBuffers(window_); }

void Window::pace(std::chrono::steady_clock::time_point frame_start, bool calm) {
  std::this_thread::sleep_until(frame_start + std::chrono::microseconds(calm ? 25000 : 16600));
}

}  // namespace kvscope::gui
