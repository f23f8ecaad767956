-- Drives a real Neovim through Tandem inline completions, the way a user would: open a file,
-- put the cursor somewhere, press `i`, wait for the ghost text, press <Tab> to accept it,
-- leave insert mode, `:write`. Loaded by the init.lua that tests/editor/nvim.py writes.
--
-- Input: the JSON file named by the global TANDEM_DRIVER_CONFIG (see nvim.py).
-- Output: a JSON result file, rewritten after every step so that a harness that has to kill
-- Neovim on a timeout still learns how far it got. Every wait has a deadline.

local api, uv = vim.api, vim.uv

local cfg = vim.json.decode(table.concat(vim.fn.readfile(TANDEM_DRIVER_CONFIG), '\n'))

local T0 = uv.hrtime()
local function now_ms()
  return (uv.hrtime() - T0) / 1e6
end

local result = {
  nvim_version = tostring(vim.version()),
  events = {},
  statuses = {},
  cases = {},
  done = false,
}
local finished = false

local save

local function event(fmt, ...)
  table.insert(result.events, ('%9.1f ms  '):format(now_ms()) .. fmt:format(...))
  save()
end

function save()
  local ok, encoded = pcall(vim.json.encode, result)
  if not ok then
    encoded = vim.json.encode({ error = 'could not encode the result: ' .. tostring(encoded) })
  end
  vim.fn.writefile({ encoded }, cfg.result_path)
end

local function finish(err)
  if finished then
    return
  end
  finished = true
  result.error = err
  result.done = err == nil
  event(err and ('FAILED: ' .. err) or 'all cases done')
  save()
  -- Leave without waiting on anything: the harness checks what is on disk.
  vim.schedule(function()
    vim.cmd(err and 'cquit! 3' or 'qall!')
  end)
end

-- ---------------------------------------------------------------------------------------
-- Observations (read-only hooks): the server's status notifications (set up in init.lua,
-- which calls on_status) and each inline completion request with its raw answer.
-- ---------------------------------------------------------------------------------------
local requests = {} ---@type table[]

function TANDEM_ON_STATUS(params)
  params = params or {}
  params.at_ms = now_ms()
  table.insert(result.statuses, params)
  event('tandem/status %s: %s', tostring(params.state), tostring(params.message))
end

local function watch_requests(client)
  if client._tandem_watched then
    return
  end
  client._tandem_watched = true
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

api.nvim_create_autocmd('LspAttach', {
  callback = function(ev)
    local client = vim.lsp.get_client_by_id(ev.data.client_id)
    if client and client.name == 'tandem' then
      watch_requests(client)
      event('LspAttach tandem to buffer %d', ev.buf)
    end
  end,
})

-- Accepting like a user: <Tab> accepts the ghost text, or is a plain <Tab> when there is none
-- (the mapping suggested by `:help vim.lsp.inline_completion.get()`).
vim.o.columns = 160
vim.o.lines = 60

local accepted_by_tab = nil
vim.keymap.set('i', '<Tab>', function()
  accepted_by_tab = vim.lsp.inline_completion.get()
  if not accepted_by_tab then
    return '<Tab>'
  end
end, { expr = true, desc = 'Accept the current inline completion' })

-- ---------------------------------------------------------------------------------------
-- Waiting: poll every few milliseconds, fail the whole run at the deadline.
-- ---------------------------------------------------------------------------------------
local function wait_until(what, timeout_ms, pred, on_done, on_timeout)
  local deadline = now_ms() + timeout_ms
  local timer = assert(uv.new_timer())
  local stopped = false
  local function stop()
    stopped = true
    timer:stop()
    if not timer:is_closing() then
      timer:close()
    end
  end
  timer:start(
    0,
    cfg.poll_ms,
    vim.schedule_wrap(function()
      if stopped or finished then
        if not stopped then
          stop()
        end
        return
      end
      local ok, value = pcall(pred)
      if not ok then
        stop()
        return finish(('error while waiting for %s: %s'):format(what, tostring(value)))
      end
      if value then
        stop()
        local ok2, err = pcall(on_done, value)
        if not ok2 then
          finish(('error after %s: %s'):format(what, tostring(err)))
        end
      elseif now_ms() > deadline then
        stop()
        local msg = ('timed out after %.1f s waiting for %s'):format(timeout_ms / 1000, what)
        if on_timeout then
          local ok2, err = pcall(on_timeout, msg)
          if not ok2 then
            finish(('error after %s: %s'):format(msg, tostring(err)))
          end
        else
          finish(msg)
        end
      end
    end)
  )
end

local function last_status()
  return result.statuses[#result.statuses] or {}
end

local function buffer_text(buf)
  local text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
  if vim.bo[buf].eol then
    text = text .. '\n'
  end
  return text
end

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

local function feed(keys, mode)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), mode, false)
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
          accepted_by_tab = nil
          feed('<Tab>', 'm')
          wait_until('the buffer to change after <Tab>', 5000, function()
            return accepted_by_tab ~= nil and buffer_text(buf) ~= before
          end, function()
            rec.accepted = accepted_by_tab
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
