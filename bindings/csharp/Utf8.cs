// Text across the C ABI: every libquaestor text is UTF-8 and NUL-terminated.

using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Quaestor.Native
{
    internal static class Utf8
    {
        // Throws on text with no UTF-8 form (a lone surrogate) rather than sending U+FFFD.
        private static readonly UTF8Encoding Strict = new UTF8Encoding(false, true);

        // libquaestor only writes UTF-8; should it ever not, show U+FFFD rather than fail.
        private static readonly UTF8Encoding Lenient = new UTF8Encoding(false, false);

        /// <summary>
        /// <paramref name="text"/> as UTF-8 and a NUL. ArgumentNullException if it is null;
        /// ArgumentException if it holds a NUL (C would see only the text before it) or a lone
        /// surrogate (it has no UTF-8 form).
        /// </summary>
        internal static byte[] Required(string text, string parameter)
        {
            if (text == null)
            {
                throw new ArgumentNullException(parameter);
            }
            return Encode(text, parameter);
        }

        /// <summary>As <see cref="Required"/>, but null is C's NULL.</summary>
        internal static byte[] Optional(string text, string parameter)
        {
            return text == null ? null : Encode(text, parameter);
        }

        private static byte[] Encode(string text, string parameter)
        {
            if (text.IndexOf('\0') >= 0)
            {
                throw new ArgumentException(
                    parameter + " holds a NUL character, which C text cannot carry", parameter);
            }
            int length;
            try
            {
                length = Strict.GetByteCount(text);
            }
            catch (EncoderFallbackException e)
            {
                throw new ArgumentException(
                    parameter + " is not valid Unicode (a lone surrogate), so it has no UTF-8 form",
                    parameter,
                    e);
            }
            var bytes = new byte[length + 1];
            Strict.GetBytes(text, 0, text.Length, bytes, 0);
            return bytes;
        }

        /// <summary>The NUL-terminated UTF-8 text at <paramref name="text"/>, copied; null for NULL.</summary>
        internal static string FromNative(IntPtr text)
        {
            if (text == IntPtr.Zero)
            {
                return null;
            }
            int length = 0;
            while (Marshal.ReadByte(text, length) != 0)
            {
                length++;
            }
            var bytes = new byte[length];
            Marshal.Copy(text, bytes, 0, length);
            return Lenient.GetString(bytes);
        }

        /// <summary>The first <paramref name="length"/> bytes of <paramref name="bytes"/>, decoded.</summary>
        internal static string FromBuffer(byte[] bytes, int length)
        {
            return Lenient.GetString(bytes, 0, length);
        }
    }
}
