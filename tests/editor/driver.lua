-- Drives a real Neovim through Tandem inline completions, the way a user would: open a file,
-- put the cursor somewhere, press `i`, wait for the ghost text, press <Tab> to accept it,
-- leave insert mode, `:write`. Loaded by the init.lua that tests/editor/nvim.py writes.
--
-- Input: the JSON file named by the global TANDEM_DRIVER_CONFIG (see nvim.py).
-- Output: a JSON result file, rewritten after every step so that a harness that has to kill
-- Neovim on a timeout still learns how far it got. Every wait has a deadline.

local api = vim.api
local here = vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2))
local S = dofile(vim.fs.joinpath(here, 'session.lua'))({ cases = {} }, 'all cases done')
local cfg, result, now_ms, event, save, finish = S.cfg, S.result, S.now_ms, S.event, S.save, S.finish
local wait_until, feed, buffer_text = S.wait_until, S.feed, S.buffer_text
local last_status = S.last_status

-- ---------------------------------------------------------------------------------------
-- Observations (read-only hooks): the server's status notifications (set up in init.lua,
-- which calls on_status) and each inline completion request with its raw answer.
-- ---------------------------------------------------------------------------------------
local requests = {} ---@type table[]

local function watch_requests(client)
  local orig = client.request
  client.request = function(self, method, params, handler, bufnr)
    if method == 'textDocument/inlineCompletion' then
      local rec = {
        sent_ms = now_ms(),
        position = params.position,
        trigger = params.context and params.context.triggerKind,
      }
      table.insert(requests, rec)
      local inner = handler
      handler = function(err, res, ctx, conf)
        rec.answered_ms = now_ms()
        rec.error = err and (err.message or tostring(err)) or nil
        rec.items = res and (res.items or res) or vim.NIL
        event(
          'inlineCompletion answered after %.0f ms: %d item(s)',
          rec.answered_ms - rec.sent_ms,
          type(rec.items) == 'table' and #rec.items or 0
        )
        if inner then
          return inner(err, res, ctx, conf)
        end
      end
      event('inlineCompletion requested at %d:%d', params.position.line, params.position.character)
    end
    return orig(self, method, params, handler, bufnr)
  end
end

S.on_attach(watch_requests)


-- ---------------------------------------------------------------------------------------
-- Waiting: poll every few milliseconds, fail the whole run at the deadline.
-- ---------------------------------------------------------------------------------------



local function ghost_marks(buf)
  local ns = api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not ns then
    return nil
  end
  local marks = api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  return marks
end

-- The ghost text exactly as Neovim draws it: the virtual text at the mark, then virtual lines.
local function ghost_from_marks(marks)
  local mark = marks[1]
  local details = mark[4]
  local function join(chunks)
    local parts = {}
    for _, chunk in ipairs(chunks or {}) do
      if chunk[2] ~= 'ComplHintMore' then
        table.insert(parts, chunk[1])
      end
    end
    return table.concat(parts)
  end
  local lines = { join(details.virt_text) }
  for _, vl in ipairs(details.virt_lines or {}) do
    table.insert(lines, join(vl))
  end
  return {
    text = table.concat(lines, '\n'),
    row = mark[2],
    col = mark[3],
    virt_text_pos = details.virt_text_pos,
    marks = #marks,
  }
end

-- What the user sees: the screen rows of buffer line `row` (0-based) and of the
-- `extra` virtual lines below it, read back from Neovim's own screen grid.
local function screen_rows(row, extra)
  vim.cmd.redraw({ bang = true })
  local pos = vim.fn.screenpos(0, row + 1, 1)
  if pos.row == 0 then
    return {}
  end
  local rows = {}
  for r = pos.row, math.min(pos.row + extra, vim.o.lines) do
    local cells = {}
    for c = 1, vim.o.columns do
      cells[#cells + 1] = vim.fn.screenstring(r, c)
    end
    rows[#rows + 1] = (table.concat(cells):gsub('%s+$', ''))
  end
  return rows
end


-- ---------------------------------------------------------------------------------------
-- One case: open, place the cursor, `i`, ghost text, <Tab>, <Esc>, :write.
-- ---------------------------------------------------------------------------------------
local run_case

local function case_done(index)
  if index < #cfg.cases then
    run_case(index + 1)
  else
    finish(nil)
  end
end

run_case = function(index)
  local case = cfg.cases[index]
  local rec = { name = case.name, file = case.file }
  result.cases[index] = rec
  event('case %d (%s): open %s', index, case.name, case.file)
  local previous = api.nvim_get_current_buf()
  vim.cmd.edit(vim.fn.fnameescape(case.file))
  local buf = api.nvim_get_current_buf()
  if index > 1 and previous ~= buf and api.nvim_buf_is_valid(previous) then
    -- Close the previous file. Besides being tidy, this works around a bug of this Neovim
    -- build (fixed upstream in neovim/neovim#35965): inline completion's autocmds are not
    -- buffer-local, so every buffer with Tandem attached sends its own request (with the
    -- current cursor position) on each keystroke, queueing work in front of the real one.
    api.nvim_buf_delete(previous, { force = true })
  end
  rec.filetype = vim.bo[buf].filetype

  local function tandem_client()
    return vim.lsp.get_clients({ bufnr = buf, name = 'tandem' })[1]
  end

  wait_until('the tandem server to attach to the buffer', cfg.attach_timeout_ms, tandem_client, function(client)
    rec.offset_encoding = client.offset_encoding
    rec.server_advertises_inline_completion = client:supports_method('textDocument/inlineCompletion', buf)
    if not rec.server_advertises_inline_completion then
      return finish('the server does not advertise textDocument/inlineCompletion')
    end
    wait_until('the model to be ready (tandem/status "ready")', cfg.ready_timeout_ms, function()
      local st = last_status()
      if st.state == 'error' or st.state == 'disabled' then
        error(('the server reports %s: %s'):format(st.state, tostring(st.message)), 0)
      end
      return st.state == 'ready' and st or nil
    end, function(st)
      rec.ready_ms = now_ms()
      rec.model = st.model
      rec.device = st.device
      -- Place the cursor in normal mode ('virtualedit' lets it sit after the last character,
      -- like `i` would then insert there), then press `i` like a user.
      vim.o.virtualedit = 'onemore'
      api.nvim_win_set_cursor(0, { case.line + 1, case.col })
      local n_requests = #requests
      local t_insert = nil
      api.nvim_create_autocmd('InsertEnter', {
        once = true,
        callback = function()
          t_insert = now_ms()
          event('InsertEnter')
        end,
      })
      feed('i', 'n')
      wait_until('insert mode', 5000, function()
        return t_insert and api.nvim_get_mode().mode == 'i'
      end, function()
        local cur = api.nvim_win_get_cursor(0)
        rec.insert_cursor = { cur[1] - 1, cur[2] }
        rec.text_before = buffer_text(buf)
        save()
        wait_until('ghost text (inline completion extmark)', cfg.ghost_timeout_ms, function()
          local marks = ghost_marks(buf)
          return marks and ghost_from_marks(marks) or nil
        end, function(ghost)
          rec.ghost_ms = now_ms() - t_insert
          rec.ghost = ghost
          local _, nl = ghost.text:gsub('\n', '')
          rec.screen = screen_rows(ghost.row, nl)
          -- The request whose answer is on screen: the last one answered.
          for i = #requests, n_requests + 1, -1 do
            if requests[i].answered_ms then
              rec.request = requests[i]
              rec.request_ms = requests[i].answered_ms - requests[i].sent_ms
              rec.debounce_ms = requests[i].sent_ms - t_insert
              break
            end
          end
          rec.requests = vim.list_slice(requests, n_requests + 1)
          event('ghost text shown %.0f ms after InsertEnter: %s', rec.ghost_ms, vim.inspect(ghost.text))
          save()
          if not cfg.accept then
            rec.final_buffer = buffer_text(buf)
            feed('<Esc>', 'n')
            return wait_until('normal mode', 5000, function()
              return api.nvim_get_mode().mode == 'n'
            end, function()
              case_done(index)
            end)
          end
          local before = buffer_text(buf)
          S.accepted_by_tab = nil
          feed('<Tab>', 'm')
          wait_until('the buffer to change after <Tab>', 5000, function()
            return S.accepted_by_tab ~= nil and buffer_text(buf) ~= before
          end, function()
            rec.accepted = S.accepted_by_tab
            local c = api.nvim_win_get_cursor(0)
            rec.cursor_after_accept = { c[1] - 1, c[2] }
            feed('<Esc>', 'n')
            wait_until('normal mode after <Esc>', 5000, function()
              return api.nvim_get_mode().mode == 'n'
            end, function()
              vim.cmd.write()
              rec.final_buffer = buffer_text(buf)
              rec.written = true
              event('accepted with <Tab> and wrote %s', case.file)
              save()
              case_done(index)
            end)
          end)
        end, cfg.keep_going and function(msg)
          -- No ghost text: record why (with what the server answered) and go on.
          rec.error = msg
          rec.requests = vim.list_slice(requests, n_requests + 1)
          rec.final_buffer = buffer_text(buf)
          event('case %d: %s', index, msg)
          save()
          feed('<Esc>', 'n')
          wait_until('normal mode', 5000, function()
            return api.nvim_get_mode().mode == 'n'
          end, function()
            case_done(index)
          end)
        end or nil)
      end)
    end)
  end)
end

vim.defer_fn(function()
  finish(('overall timeout of %.0f s reached'):format(cfg.total_timeout_ms / 1000))
end, cfg.total_timeout_ms)

api.nvim_create_autocmd('VimEnter', {
  once = true,
  callback = function()
    event('VimEnter')
    -- Scheduled, not run inside the autocmd: autocmds (FileType, which starts the server)
    -- do not fire from within another autocmd unless it is nested.
    vim.schedule(function()
      local ok, err = pcall(run_case, 1)
      if not ok then
        finish('driver error: ' .. tostring(err))
      end
    end)
  end,
})
