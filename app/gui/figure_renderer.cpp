#include "app/gui/figure_renderer.h"

#include <GLFW/glfw3.h>
#include <GL/gl.h>
#include <GL/glext.h>
#include <backends/imgui_impl_opengl3.h>

#include <cstdio>
#include <filesystem>
#include <vector>

#include "app/gui/png_capture.h"
#include "core/util/error.h"

namespace kvscope::gui {

namespace {

constexpr const char* kFontPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";  // as the GUI

// OpenGL 3.0 framebuffer-object entry points, fetched at run time (libGL exports only 1.x).
struct FboApi {
  PFNGLGENFRAMEBUFFERSPROC gen_framebuffers = nullptr;
  PFNGLDELETEFRAMEBUFFERSPROC delete_framebuffers = nullptr;
  PFNGLBINDFRAMEBUFFERPROC bind_framebuffer = nullptr;
  PFNGLGENRENDERBUFFERSPROC gen_renderbuffers = nullptr;
  PFNGLDELETERENDERBUFFERSPROC delete_renderbuffers = nullptr;
  PFNGLBINDRENDERBUFFERPROC bind_renderbuffer = nullptr;
  PFNGLRENDERBUFFERSTORAGEPROC renderbuffer_storage = nullptr;
  PFNGLFRAMEBUFFERRENDERBUFFERPROC framebuffer_renderbuffer = nullptr;
  PFNGLCHECKFRAMEBUFFERSTATUSPROC check_framebuffer_status = nullptr;

  bool load() {
    auto get = [](const char* name) { return glfwGetProcAddress(name); };
    gen_framebuffers = reinterpret_cast<PFNGLGENFRAMEBUFFERSPROC>(get("glGenFramebuffers"));
    delete_framebuffers = reinterpret_cast<PFNGLDELETEFRAMEBUFFERSPROC>(get("glDeleteFramebuffers"));
    bind_framebuffer = reinterpret_cast<PFNGLBINDFRAMEBUFFERPROC>(get("glBindFramebuffer"));
    gen_renderbuffers = reinterpret_cast<PFNGLGENRENDERBUFFERSPROC>(get("glGenRenderbuffers"));
    delete_renderbuffers = reinterpret_cast<PFNGLDELETERENDERBUFFERSPROC>(get("glDeleteRenderbuffers"));
    bind_renderbuffer = reinterpret_cast<PFNGLBINDRENDERBUFFERPROC>(get("glBindRenderbuffer"));
    renderbuffer_storage = reinterpret_cast<PFNGLRENDERBUFFERSTORAGEPROC>(get("glRenderbufferStorage"));
    framebuffer_renderbuffer = reinterpret_cast<PFNGLFRAMEBUFFERRENDERBUFFERPROC>(get("glFramebufferRenderbuffer"));
    check_framebuffer_status = reinterpret_cast<PFNGLCHECKFRAMEBUFFERSTATUSPROC>(get("glCheckFramebufferStatus"));
    return gen_framebuffers && delete_framebuffers && bind_framebuffer && gen_renderbuffers && delete_renderbuffers &&
           bind_renderbuffer && renderbuffer_storage && framebuffer_renderbuffer && check_framebuffer_status;
  }
};

}  // namespace

struct FigureRenderer::Impl {
  GLFWwindow* window = nullptr;
  ImGuiContext* imgui = nullptr;
  bool backend = false;
  FboApi gl;
};

FigureRenderer::FigureRenderer(const FigureStyle& style) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  glfwSetErrorCallback([](int, const char*) {});  // failures are reported below, as one line
  if (!glfwInit())
    throw Error("report: cannot initialise GLFW: no display (set DISPLAY, or run under xvfb-run -a)");
  glfwWindowHint(GLFW_VISIBLE, GLFW_FALSE);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  s.window = glfwCreateWindow(64, 64, "kvscope report", nullptr, nullptr);
  if (!s.window) {
    glfwTerminate();
    throw Error("report: cannot create an OpenGL 3.0 context on this display (try xvfb-run -a kvscope report ...)");
  }
  glfwMakeContextCurrent(s.window);
  if (!s.gl.load()) {
    glfwDestroyWindow(s.window);
    glfwTerminate();
    throw Error("report: the OpenGL context has no framebuffer objects (OpenGL 3.0 needed)");
  }
  IMGUI_CHECKVERSION();
  s.imgui = ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;  // a report leaves no imgui.ini behind
  io.LogFilename = nullptr;
  if (style.dark) ImGui::StyleColorsDark();
  else ImGui::StyleColorsLight();
  ImGui::GetStyle().WindowRounding = 0;
  ImGui::GetStyle().WindowBorderSize = 0;
  if (std::filesystem::exists(kFontPath)) io.Fonts->AddFontFromFileTTF(kFontPath, style.font_px);
  else {
    ImFontConfig cfg;
    cfg.SizePixels = style.font_px;
    io.Fonts->AddFontDefault(&cfg);
  }
  ImGui_ImplOpenGL3_Init("#version 130");
  s.backend = true;
}

FigureRenderer::~FigureRenderer() {
  Impl& s = *impl_;
  if (s.backend) ImGui_ImplOpenGL3_Shutdown();
  if (s.imgui) ImGui::DestroyContext(s.imgui);
  if (s.window) glfwDestroyWindow(s.window);
  glfwTerminate();
}

void FigureRenderer::render(const std::string& path, int w, int h, const std::function<void(ImVec2)>& draw) {
  Impl& s = *impl_;
  if (w <= 0 || h <= 0) fail(path, "figure size {}x{} is empty", w, h);
  GLuint fbo = 0, rbo = 0;
  s.gl.gen_framebuffers(1, &fbo);
  s.gl.bind_framebuffer(GL_FRAMEBUFFER, fbo);
  s.gl.gen_renderbuffers(1, &rbo);
  s.gl.bind_renderbuffer(GL_RENDERBUFFER, rbo);
  s.gl.renderbuffer_storage(GL_RENDERBUFFER, GL_RGBA8, w, h);
  s.gl.framebuffer_renderbuffer(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_RENDERBUFFER, rbo);
  auto release = [&] {
    s.gl.bind_framebuffer(GL_FRAMEBUFFER, 0);
    s.gl.delete_renderbuffers(1, &rbo);
    s.gl.delete_framebuffers(1, &fbo);
  };
  if (s.gl.check_framebuffer_status(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE) {
    release();
    fail(path, "cannot render a {}x{} figure (framebuffer incomplete; too large for this OpenGL?)", w, h);
  }
  ImGuiIO& io = ImGui::GetIO();
  io.DisplaySize = ImVec2(static_cast<float>(w), static_cast<float>(h));
  io.DisplayFramebufferScale = ImVec2(1, 1);
  io.DeltaTime = 1.0f / 60;
  io.MousePos = ImVec2(-FLT_MAX, -FLT_MAX);  // nothing hovered: no tooltips in a figure
  // Two frames: the first settles ImGui's window sizes, the second is captured.
  for (int frame = 0; frame < 2; ++frame) {
    ImGui_ImplOpenGL3_NewFrame();
    ImGui::NewFrame();
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(io.DisplaySize);
    ImGui::SetNextWindowBgAlpha(1.0f);
    ImGui::Begin("##figure", nullptr,
                 ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoSavedSettings | ImGuiWindowFlags_NoMove |
                     ImGuiWindowFlags_NoScrollWithMouse);
    draw(ImGui::GetContentRegionAvail());
    ImGui::End();
    ImGui::Render();
    glViewport(0, 0, w, h);
    ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
    glClearColor(bg.x, bg.y, bg.z, 1);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
  }
  std::vector<uint8_t> pixels(static_cast<size_t>(w) * h * 3);
  while (glGetError() != GL_NO_ERROR) {
  }  // only the read-back's own error counts below
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE, pixels.data());
  GLenum err = glGetError();
  release();
  if (err != GL_NO_ERROR) fail(path, "reading the rendered figure failed (OpenGL error 0x{:x})", err);
  write_gl_pixels_png(path, w, h, pixels);
}

}  // namespace kvscope::gui
