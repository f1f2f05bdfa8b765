! The README's Fortran example, used by tests/cli/test_infer.sh: infer_csv_f CKPT IN.csv OUT.csv
! IN.csv: one row of raw features per line (a header line and columns after the model's n_in, such
! as a label, are skipped); OUT.csv: one row of outputs per input row.
! Built against the installed library: gfortran infer_csv.f90 $(pkg-config --cflags --libs dptrain-fortran)
! With a fourth argument --wrong-width it passes an x one feature too wide and prints the error.
program infer_csv
  use dptrain
  use, intrinsic :: iso_c_binding, only: c_float, c_int64_t
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  type(dp_model) :: model
  integer(c_int64_t) :: n_in, n_out
  real(c_float), allocatable :: x(:, :), y(:, :)
  character(len=4096) :: ckpt, fin, fout, mode
  character(len=65536) :: line
  integer :: rc, n, i, u, ios

  call get_command_argument(1, ckpt)
  call get_command_argument(2, fin)
  call get_command_argument(3, fout)
  call get_command_argument(4, mode)
  rc = dp_infer_open(trim(ckpt), model)
  if (rc /= 0) then
    write (error_unit, '(a)') 'infer_csv_f: '//dp_infer_last_error()
    stop 1
  end if
  call dp_infer_dims(model, n_in, n_out)

  open (newunit=u, file=trim(fin), status='old', action='read')
  n = 0
  do
    read (u, '(a)', iostat=ios) line
    if (ios /= 0) exit
    if (is_data(line)) n = n + 1
  end do
  rewind (u)
  allocate (x(n_in, n), y(n_out, n))
  i = 0
  do
    read (u, '(a)', iostat=ios) line
    if (ios /= 0) exit
    if (.not. is_data(line)) cycle
    i = i + 1
    read (line, *) x(:, i)
  end do
  close (u)

  if (trim(mode) == '--wrong-width') then
    deallocate (x)
    allocate (x(n_in + 1, n))
    x = 0
    rc = dp_infer_predict(model, x, y)
    write (*, '(i0,1x,a)') rc, dp_infer_last_error()
    stop 3
  end if
  rc = dp_infer_predict(model, x, y)
  if (rc /= 0) then
    write (error_unit, '(a)') 'infer_csv_f: '//dp_infer_last_error()
    stop 1
  end if
  open (newunit=u, file=trim(fout), status='replace', action='write')
  do i = 1, n
    write (u, '(*(es16.8e2,:,","))') y(:, i)
  end do
  close (u)
  call dp_infer_close(model)

contains

  logical function is_data(s)
    character(len=*), intent(in) :: s
    character :: c
    c = adjustl(s)
    is_data = index('0123456789+-.', c) > 0 .and. c /= ' '
  end function

end program
