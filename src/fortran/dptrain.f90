! The Fortran interface to the dptrain inference library (include/dptrain/infer.h), through
! iso_c_binding. Arrays are Fortran's column-major x(n_in, n) and y(n_out, n): the same memory as the
! C library's row-major (n, n_in) and (n, n_out), so nothing is copied.
module dptrain
  use, intrinsic :: iso_c_binding
  implicit none
  private
  public :: dp_model, dp_infer_open, dp_infer_dims, dp_infer_predict, dp_infer_close, dp_infer_last_error

  ! DP_ESHAPE of include/dptrain/error.h: an array whose shape does not fit the model.
  integer(c_int), parameter, public :: DP_ESHAPE = -6

  type :: dp_model
    type(c_ptr) :: ptr = c_null_ptr
  end type

  ! The wrapper's own shape errors, which the C library never sees (per program, not per thread).
  character(len=256), save :: shape_error = ''
  logical, save :: shape_failed = .false.

  interface
    integer(c_int) function c_open(path, model) bind(c, name='dp_infer_open')
      import :: c_char, c_ptr, c_int
      character(kind=c_char), intent(in) :: path(*)
      type(c_ptr), intent(out) :: model
    end function
    subroutine c_dims(model, n_in, n_out) bind(c, name='dp_infer_dims')
      import :: c_ptr, c_int64_t
      type(c_ptr), value :: model
      integer(c_int64_t), intent(out) :: n_in, n_out
    end subroutine
    integer(c_int) function c_predict(model, x, n, y) bind(c, name='dp_infer_predict')
      import :: c_ptr, c_int, c_int64_t, c_float
      type(c_ptr), value :: model
      real(c_float), intent(in) :: x(*)
      integer(c_int64_t), value :: n
      real(c_float), intent(inout) :: y(*)
    end function
    subroutine c_close(model) bind(c, name='dp_infer_close')
      import :: c_ptr
      type(c_ptr), value :: model
    end subroutine
    type(c_ptr) function c_last_error() bind(c, name='dp_infer_last_error')
      import :: c_ptr
    end function
    integer(c_size_t) function c_strlen(s) bind(c, name='strlen')
      import :: c_ptr, c_size_t
      type(c_ptr), value :: s
    end function
  end interface

contains

  ! 0, or a negative DP_E code (dp_infer_last_error says why).
  integer function dp_infer_open(path, model) result(rc)
    character(len=*), intent(in) :: path
    type(dp_model), intent(out) :: model
    shape_failed = .false.
    rc = int(c_open(trim(path)//c_null_char, model%ptr))
  end function

  subroutine dp_infer_dims(model, n_in, n_out)
    type(dp_model), intent(in) :: model
    integer(c_int64_t), intent(out) :: n_in, n_out
    call c_dims(model%ptr, n_in, n_out)
  end subroutine

  ! y(n_out, n) for x(n_in, n): class probabilities, or the outputs of an mse model.
  integer function dp_infer_predict(model, x, y) result(rc)
    type(dp_model), intent(inout) :: model
    real(c_float), intent(in), contiguous :: x(:, :)
    real(c_float), intent(inout), contiguous :: y(:, :)
    integer(c_int64_t) :: n_in, n_out
    shape_failed = .false.
    call c_dims(model%ptr, n_in, n_out)
    if (size(x, 1, c_int64_t) /= n_in .or. size(y, 1, c_int64_t) /= n_out .or. size(y, 2) /= size(x, 2)) then
      write (shape_error, '(a,i0,a,i0,a,i0,a,i0,a,i0,a,i0,a)') 'dp_infer_predict: x is (', size(x, 1), ', ', &
        size(x, 2), ') and y (', size(y, 1), ', ', size(y, 2), '); the model needs x(', n_in, ', n) and y(', &
        n_out, ', n)'
      shape_failed = .true.
      rc = DP_ESHAPE
      return
    end if
    rc = int(c_predict(model%ptr, x, size(x, 2, c_int64_t), y))
  end function

  subroutine dp_infer_close(model)
    type(dp_model), intent(inout) :: model
    call c_close(model%ptr)
    model%ptr = c_null_ptr
  end subroutine

  ! The message of the last failure.
  function dp_infer_last_error() result(msg)
    character(len=:), allocatable :: msg
    type(c_ptr) :: p
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    if (shape_failed) then
      msg = trim(shape_error)
      return
    end if
    p = c_last_error()
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate (character(len=n) :: msg)
    do i = 1, n
      msg(i:i) = chars(i)
    end do
  end function

end module dptrain
